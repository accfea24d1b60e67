//! The kernel heap: placement arithmetic and the global allocator, `stub-allocator`'s size
//! classes (O(1) for blocks up to 8 KiB) over `linked_list_allocator`'s first fit.
//!
//! The heap covers the domain's populated RAM above the kernel image and the boot data the
//! loader put after it (start info, command line, memory map, modules). On allocation
//! failure the allocator logs and returns null (an `alloc_error_handler` is not stable);
//! the default handler then panics, which the panic handler turns into `SHUTDOWN_crash`.
//! Code that allocates guest-controlled sizes uses `try_reserve` and handles the error.

use core::fmt;

use crate::xen::memory_map::MemoryMap;

/// Page granularity for the heap's bounds.
pub const PAGE_SIZE_BYTES: u64 = 4096;
/// Below this the stub cannot do useful work.
pub const MIN_HEAP_SIZE_BYTES: u64 = 256 * 1024;
/// Pages of the populated reservation that are not in the low RAM region: the 8 special
/// pages at 0xfeff8000 (xen-abi §4.1) plus slack for frames the toolstack may add.
pub const RESERVATION_PAGES_OUTSIDE_LOW_RAM: u64 = 16;

/// Where the heap goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapPlan {
    pub start: u64,
    pub size_bytes: u64,
}

impl HeapPlan {
    pub const fn end(&self) -> u64 {
        self.start + self.size_bytes
    }
}

/// Why no heap could be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapPlanError {
    /// The kernel image is not inside a RAM region of the memory map.
    KernelNotInRam { kernel_end: u64 },
    /// Less than [`MIN_HEAP_SIZE_BYTES`] between the boot data and the end of usable RAM.
    TooSmall { start: u64, end: u64 },
}

impl fmt::Display for HeapPlanError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapPlanError::KernelNotInRam { kernel_end } => {
                write!(
                    formatter,
                    "no RAM region contains the kernel image (end {kernel_end:#x})"
                )
            }
            HeapPlanError::TooSmall { start, end } => write!(
                formatter,
                "only {start:#x}..{end:#x} is free for the heap (need {MIN_HEAP_SIZE_BYTES} bytes)"
            ),
        }
    }
}

const fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

const fn align_down(value: u64, alignment: u64) -> u64 {
    value / alignment * alignment
}

/// The end of populated low RAM given `XENMEM_current_reservation` pages.
///
/// libxc populates guest frames from 0 upwards for the `--memory` size, plus special pages
/// elsewhere; subtracting those gives a conservative bound.
pub const fn populated_ram_end(reservation_pages: u64) -> u64 {
    reservation_pages.saturating_sub(RESERVATION_PAGES_OUTSIDE_LOW_RAM) * PAGE_SIZE_BYTES
}

/// Places the heap: from above the image and boot data to the end of the RAM region that
/// holds the image, capped by populated memory and by the identity-mapped range.
pub fn plan_heap(
    kernel_end: u64,
    boot_data_end: u64,
    memory_map: &MemoryMap,
    populated_end: Option<u64>,
    mapped_limit: u64,
) -> Result<HeapPlan, HeapPlanError> {
    let ram = memory_map
        .ram_region_containing(kernel_end.saturating_sub(1))
        .ok_or(HeapPlanError::KernelNotInRam { kernel_end })?;
    // Boot data below the image (QEMU puts its start info in low memory) does not matter.
    let start = align_up(kernel_end.max(boot_data_end), PAGE_SIZE_BYTES);
    let mut end = ram.end().min(mapped_limit);
    if let Some(populated_end) = populated_end {
        end = end.min(populated_end);
    }
    let end = align_down(end, PAGE_SIZE_BYTES);
    if end < start || end - start < MIN_HEAP_SIZE_BYTES {
        return Err(HeapPlanError::TooSmall { start, end });
    }
    Ok(HeapPlan {
        start,
        size_bytes: end - start,
    })
}

/// Heap usage figures: `used_bytes + class_free_bytes + free_bytes == size_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStatistics {
    pub size_bytes: usize,
    /// Bytes in live blocks.
    pub used_bytes: usize,
    /// Freed blocks kept in the size classes' free lists (free for their class only).
    pub class_free_bytes: usize,
    /// What the backing first-fit heap can still hand out.
    pub free_bytes: usize,
}

#[cfg(target_os = "none")]
pub use allocator::{init_heap, statistics};

#[cfg(target_os = "none")]
mod allocator {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;

    use stub_allocator::LockedSizeClassHeap;

    use super::{HeapPlan, HeapStatistics};

    /// `stub_allocator::SizeClassHeap` behind the global-allocator interface, logging failures.
    /// `bench/src/bin/stub-heap` measures this same allocator under the engine.
    struct KernelHeap {
        heap: LockedSizeClassHeap,
    }

    #[global_allocator]
    static KERNEL_HEAP: KernelHeap = KernelHeap {
        heap: LockedSizeClassHeap::empty(),
    };

    // SAFETY: allocation and deallocation are delegated to `stub_allocator::SizeClassHeap`
    // under its lock, which upholds the GlobalAlloc contract; failures return null.
    unsafe impl GlobalAlloc for KernelHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let (free_bytes, class_free_bytes) = {
                let mut heap = self.heap.lock();
                match heap.allocate(layout) {
                    Ok(pointer) => return pointer.as_ptr(),
                    Err(()) => (heap.free(), heap.class_free_bytes()),
                }
            };
            // The lock is released; logging does not allocate.
            crate::runtime::trace::record("heap.alloc_failed", layout.size() as u64);
            log::error!(
                "heap: cannot allocate {} bytes (alignment {}); {} bytes free, {} more in \
                 size-class free lists",
                layout.size(),
                layout.align(),
                free_bytes,
                class_free_bytes
            );
            core::ptr::null_mut()
        }

        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            if let Some(pointer) = NonNull::new(pointer) {
                // SAFETY: the GlobalAlloc contract says `pointer` came from `alloc` with
                // this `layout`, i.e. from this heap.
                unsafe { self.heap.lock().deallocate(pointer, layout) };
            }
        }
    }

    /// Hands the planned region to the allocator.
    ///
    /// # Safety
    ///
    /// `plan` must describe identity-mapped, populated RAM that nothing else uses, and this
    /// must be called at most once.
    pub unsafe fn init_heap(plan: HeapPlan) {
        // SAFETY: forwarded contract; the region is valid, unused memory.
        unsafe {
            KERNEL_HEAP
                .heap
                .lock()
                .init(plan.start as *mut u8, plan.size_bytes as usize)
        };
        crate::runtime::trace::record("heap.init", plan.start);
    }

    /// Current usage of the heap.
    pub fn statistics() -> HeapStatistics {
        let heap = KERNEL_HEAP.heap.lock();
        HeapStatistics {
            size_bytes: heap.size(),
            used_bytes: heap.used(),
            class_free_bytes: heap.class_free_bytes(),
            free_bytes: heap.free(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::memory_map::{MemoryKind, MemoryMapSource, MemoryRegion};

    fn map_with_ram(size_bytes: u64) -> MemoryMap {
        MemoryMap::from_regions(
            [
                MemoryRegion {
                    start: 0,
                    size_bytes,
                    kind: MemoryKind::Ram,
                },
                MemoryRegion {
                    start: 0xfeff_8000,
                    size_bytes: 0x8000,
                    kind: MemoryKind::Reserved,
                },
            ],
            MemoryMapSource::XenMemoryMapHypercall,
        )
    }

    const LIMIT: u64 = 8 << 30;

    #[test]
    fn heap_starts_above_image_and_boot_data() {
        let map = map_with_ram(8 << 20);
        let plan = plan_heap(0x15_3000, 0x15_3480, &map, None, LIMIT).expect("fits");
        assert_eq!(plan.start, 0x15_4000);
        assert_eq!(plan.end(), 8 << 20);
    }

    #[test]
    fn boot_data_below_the_image_is_ignored() {
        let map = map_with_ram(128 << 20);
        let plan = plan_heap(0x20_0000, 0x7000, &map, None, LIMIT).expect("fits");
        assert_eq!(plan.start, 0x20_0000);
    }

    #[test]
    fn populated_memory_caps_the_heap() {
        // --memory 8 --maxmem 64: the RAM entry says 64 MiB, only 8 MiB are backed.
        let map = map_with_ram(64 << 20);
        let reservation_pages = (8 << 20) / PAGE_SIZE_BYTES + 8;
        let populated_end = populated_ram_end(reservation_pages);
        assert_eq!(populated_end, (8 << 20) - 8 * PAGE_SIZE_BYTES);
        let plan = plan_heap(0x20_0000, 0, &map, Some(populated_end), LIMIT).expect("fits");
        assert_eq!(plan.end(), populated_end);
    }

    #[test]
    fn errors_when_the_image_is_not_in_ram_or_no_room() {
        let map = map_with_ram(1 << 20);
        assert_eq!(
            plan_heap(0x20_0000, 0, &map, None, LIMIT),
            Err(HeapPlanError::KernelNotInRam {
                kernel_end: 0x20_0000
            })
        );
        let map = map_with_ram(0x21_0000);
        assert!(matches!(
            plan_heap(0x20_0000, 0, &map, None, LIMIT),
            Err(HeapPlanError::TooSmall { .. })
        ));
        assert_eq!(populated_ram_end(3), 0);
    }

    #[test]
    fn mapped_limit_caps_the_heap() {
        let map = map_with_ram(16 << 30);
        let plan = plan_heap(0x20_0000, 0, &map, None, LIMIT).expect("fits");
        assert_eq!(plan.end(), LIMIT);
    }
}
