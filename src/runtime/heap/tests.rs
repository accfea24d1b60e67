//! Tests of the kernel heap's growth planning and figures (host-run).

use super::*;
use crate::xen::memory_map::{MemoryKind, MemoryMapSource, MemoryRegion, stub_domain_map_with_ram};

const LIMIT: u64 = 8 << 30;

#[test]
fn heap_starts_above_image_and_boot_data() {
    let map = stub_domain_map_with_ram(8 << 20);
    let plan = plan_heap(0x15_3000, 0x15_3480, &map, None, LIMIT).expect("fits");
    assert_eq!(plan.start, 0x15_4000);
    assert_eq!(plan.end(), 8 << 20);
}

#[test]
fn boot_data_below_the_image_is_ignored() {
    let map = stub_domain_map_with_ram(128 << 20);
    let plan = plan_heap(0x20_0000, 0x7000, &map, None, LIMIT).expect("fits");
    assert_eq!(plan.start, 0x20_0000);
}

#[test]
fn populated_memory_caps_the_heap() {
    // --memory 8 --maxmem 64: the RAM entry says 64 MiB, only 8 MiB are backed.
    let map = stub_domain_map_with_ram(64 << 20);
    let reservation_pages = (8 << 20) / PAGE_SIZE_BYTES + 8;
    let populated_end = populated_ram_end(reservation_pages);
    assert_eq!(populated_end, (8 << 20) - 8 * PAGE_SIZE_BYTES);
    let plan = plan_heap(0x20_0000, 0, &map, Some(populated_end), LIMIT).expect("fits");
    assert_eq!(plan.end(), populated_end);
}

#[test]
fn errors_when_the_image_is_not_in_ram_or_no_room() {
    let map = stub_domain_map_with_ram(1 << 20);
    assert_eq!(
        plan_heap(0x20_0000, 0, &map, None, LIMIT),
        Err(HeapPlanError::KernelNotInRam {
            kernel_end: 0x20_0000
        })
    );
    let map = stub_domain_map_with_ram(0x21_0000);
    assert!(matches!(
        plan_heap(0x20_0000, 0, &map, None, LIMIT),
        Err(HeapPlanError::TooSmall { .. })
    ));
    assert_eq!(populated_ram_end(3), 0);
}

#[test]
fn mapped_limit_caps_the_heap() {
    let map = stub_domain_map_with_ram(16 << 30);
    let plan = plan_heap(0x20_0000, 0, &map, None, LIMIT).expect("fits");
    assert_eq!(plan.end(), LIMIT);
    assert_eq!(plan.region_end, LIMIT);
}

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// The reservation `init-xenstore-domain --memory 8` populates at boot: 8 MiB from frame 0
/// plus the 8 special pages at 0xfeff8000.
const BOOT_PAGES: u64 = 8 * MIB / PAGE_SIZE_BYTES + 8;

/// The heap planned at boot with [`BOOT_PAGES`] populated, for a kernel image ending at
/// `kernel_end` and boot data ending at `boot_data_end`.
fn plan_at_boot(map: &MemoryMap, kernel_end: u64, boot_data_end: u64) -> HeapPlan {
    plan_heap(
        kernel_end,
        boot_data_end,
        map,
        Some(populated_ram_end(BOOT_PAGES)),
        LIMIT,
    )
    .expect("fits")
}

/// `init-xenstore-domain --memory 8 --maxmem 64` as Xen 4.19 builds it (and 4.17 meant
/// to, see the next test): the RAM entry of the memory map spans 64 MiB, 8 MiB are
/// populated from frame 0 plus the 8 special pages at 0xfeff8000, and the maximum
/// reservation is 64 MiB plus those 8 pages.
#[test]
fn growth_with_maxmem_reaches_the_end_of_the_ram_entry() {
    let map = stub_domain_map_with_ram(64 * MIB);
    let maximum_pages = 64 * MIB / PAGE_SIZE_BYTES + 8;
    let plan = plan_at_boot(&map, 0x20_0000, 0x20_3000);
    assert_eq!(plan.end(), 8 * MIB - 32 * KIB);
    assert_eq!(plan.region_end, 64 * MIB);
    // The last 8 populated pages are above the heap, and 8 empty ones up to the frame
    // the reservation count reaches.
    let maybe = frames_maybe_populated_above(plan.end(), BOOT_PAGES, plan.region_end);
    assert_eq!(maybe.start, (8 * MIB - 32 * KIB) / PAGE_SIZE_BYTES);
    assert_eq!(maybe.end, (8 * MIB + 32 * KIB) / PAGE_SIZE_BYTES);
    // After giving those 8 back and mapping shared_info (one page less).
    let current_pages = BOOT_PAGES - 8 - 1;
    let bounds = GrowthBounds {
        region_end: plan.region_end,
        room_pages: maximum_pages - current_pages,
    };
    assert_eq!(bounds.limit_end(plan.end()), 64 * MIB);
    // Chunks of 1 MiB from the heap's end, the last one cut at the region's end.
    let step = plan_growth(plan.end(), 100, bounds).expect("room");
    assert_eq!(step.start, plan.end());
    assert_eq!(step.size_bytes, GROWTH_CHUNK_BYTES);
    assert_eq!(step.first_frame(), plan.end() / PAGE_SIZE_BYTES);
    assert_eq!(step.frame_count(), 256);
    let near_end = 64 * MIB - 3 * PAGE_SIZE_BYTES;
    let last = plan_growth(near_end, 100, bounds).expect("room");
    assert_eq!(last.size_bytes, 3 * PAGE_SIZE_BYTES);
    assert_eq!(plan_growth(64 * MIB, 100, bounds), None);
    // An allocation larger than a chunk asks for whole pages of it.
    let big = plan_growth(
        plan.end(),
        growth_needed_bytes(3 * MIB as usize + 5, 8),
        bounds,
    )
    .expect("room");
    assert_eq!(big.size_bytes, 3 * MIB + PAGE_SIZE_BYTES);
}

/// Xen 4.17's `init-xenstore-domain --memory 8 --maxmem 64`, as it really is: the RAM
/// entry is 64 bytes long. The reservation places the heap, and growth may go up to the
/// special pages' entry, capped at the local APIC.
#[test]
fn the_4_17_maxmem_memory_map_falls_back_to_the_reservation() {
    let map = stub_domain_map_with_ram(64);
    let plan = plan_at_boot(&map, 0x19_d000, 0x19_e000);
    assert_eq!(plan.region_source, RegionSource::Reservation);
    assert_eq!(plan.start, 0x19_e000);
    assert_eq!(plan.end(), 8 * MIB - 32 * KIB);
    assert_eq!(plan.region_end, LAPIC_BASE_ADDRESS);
    let bounds = GrowthBounds {
        region_end: plan.region_end,
        room_pages: 64 * MIB / PAGE_SIZE_BYTES + 8 - (BOOT_PAGES - 8 - 1),
    };
    assert_eq!(bounds.limit_end(plan.end()), 64 * MIB + 4 * KIB);
    // Without a reservation, or with an entry over the image, no heap.
    assert_eq!(
        plan_heap(0x19_d000, 0, &map, None, LIMIT),
        Err(HeapPlanError::KernelNotInRam {
            kernel_end: 0x19_d000
        })
    );
    let covered = MemoryMap::from_regions(
        [MemoryRegion {
            start: 0x10_0000,
            size_bytes: 0x100_0000,
            kind: MemoryKind::Reserved,
        }],
        MemoryMapSource::XenMemoryMapHypercall,
    );
    assert!(matches!(
        plan_heap(0x19_d000, 0, &covered, Some(8 * MIB), LIMIT),
        Err(HeapPlanError::TooSmall { .. })
    ));
    // A normal map keeps its RAM entry.
    let normal = plan_heap(
        0x19_d000,
        0,
        &stub_domain_map_with_ram(64 * MIB),
        Some(8 * MIB),
        LIMIT,
    )
    .expect("fits");
    assert_eq!(normal.region_source, RegionSource::MemoryMap);
}

/// Without `--maxmem` the RAM entry ends at `--memory` and the maximum is the boot
/// reservation: the heap can only take back the pages `populated_ram_end` left out.
#[test]
fn growth_without_maxmem_stops_at_the_populated_end() {
    let map = stub_domain_map_with_ram(8 * MIB);
    let plan = plan_at_boot(&map, 0x20_0000, 0);
    let maybe = frames_maybe_populated_above(plan.end(), BOOT_PAGES, plan.region_end);
    assert_eq!(
        maybe.end,
        8 * MIB / PAGE_SIZE_BYTES,
        "capped by the RAM entry"
    );
    let bounds = GrowthBounds {
        region_end: plan.region_end,
        room_pages: 8 + 1,
    };
    assert_eq!(bounds.limit_end(plan.end()), 8 * MIB);
    let step = plan_growth(plan.end(), GROWTH_CHUNK_BYTES, bounds).expect("room");
    assert_eq!(step.size_bytes, 32 * KIB);
}

#[test]
fn the_reservation_caps_growth_below_the_region_end() {
    let bounds = GrowthBounds {
        region_end: 64 * MIB,
        room_pages: 100,
    };
    assert_eq!(bounds.limit_end(10 * MIB), 10 * MIB + 100 * PAGE_SIZE_BYTES);
    let step = plan_growth(10 * MIB, 1, bounds).expect("room");
    assert_eq!(step.size_bytes, 100 * PAGE_SIZE_BYTES);
    let none = GrowthBounds {
        region_end: 64 * MIB,
        room_pages: 0,
    };
    assert_eq!(none.limit_end(10 * MIB), 10 * MIB);
    assert_eq!(plan_growth(10 * MIB, 1, none), None);
    // A heap already past the region's end (never planned so) does not shrink its limit.
    assert_eq!(bounds.limit_end(70 * MIB), 70 * MIB);
    // Nothing maybe-populated when the reservation count is below the heap's end.
    assert!(frames_maybe_populated_above(10 * MIB, 100, 64 * MIB).is_empty());
    // Huge requests do not overflow.
    let huge = plan_growth(10 * MIB, u64::MAX, bounds).expect("room");
    assert_eq!(huge.size_bytes, 100 * PAGE_SIZE_BYTES);
    assert_eq!(growth_needed_bytes(usize::MAX, 8), u64::MAX);
}
