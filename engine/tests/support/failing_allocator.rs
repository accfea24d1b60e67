//! A global allocator for fault injection: the system allocator, except that a thread can
//! arm it to fail its Nth allocation (issue 15: "an allocator for tests that fails the Nth
//! allocation"). A test binary installs it with `#[global_allocator]`; the engine then sees
//! a null from the allocator exactly where the stub's heap would be exhausted. A failure on
//! a path that allocates infallibly ends the test process (`handle_alloc_error` aborts),
//! which is how such a path is found.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

std::thread_local! {
    /// Allocations left before the one that fails (0: disarmed).
    static ALLOCATIONS_BEFORE_FAILURE: Cell<u32> = const { Cell::new(0) };
    /// Set when an allocation was failed since the thread armed the allocator.
    static FAILED: Cell<bool> = const { Cell::new(false) };
    /// Every allocation fails until the thread disarms (a heap exhausted for good).
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator with per-thread fault injection.
pub struct FailingAllocator;

impl FailingAllocator {
    /// Fails the `nth` allocation from now on this thread (1 = the next; 0 = none).
    pub fn arm(nth: u32) {
        let _ = ALLOCATIONS_BEFORE_FAILURE.try_with(|left| left.set(nth));
        let _ = FAILED.try_with(|failed| failed.set(false));
    }

    /// Fails every allocation on this thread from now on, until [`FailingAllocator::disarm`].
    #[allow(dead_code, reason = "not every test binary exhausts the heap")]
    pub fn exhaust() {
        let _ = FAILED.try_with(|failed| failed.set(false));
        let _ = EXHAUSTED.try_with(|exhausted| exhausted.set(true));
    }

    /// Disarms this thread; whether an allocation was failed since [`FailingAllocator::arm`]
    /// or [`FailingAllocator::exhaust`].
    pub fn disarm() -> bool {
        let _ = ALLOCATIONS_BEFORE_FAILURE.try_with(|left| left.set(0));
        let _ = EXHAUSTED.try_with(|exhausted| exhausted.set(false));
        FAILED.try_with(Cell::get).unwrap_or(false)
    }

    /// Counts one allocation; whether it is the one to fail.
    fn fails_now() -> bool {
        if EXHAUSTED.try_with(Cell::get).unwrap_or(false) {
            let _ = FAILED.try_with(|failed| failed.set(true));
            return true;
        }
        ALLOCATIONS_BEFORE_FAILURE
            .try_with(|left| match left.get() {
                0 => false,
                1 => {
                    left.set(0);
                    let _ = FAILED.try_with(|failed| failed.set(true));
                    true
                }
                more => {
                    left.set(more - 1);
                    false
                }
            })
            .unwrap_or(false)
    }
}

// SAFETY: every call is forwarded to `System` unchanged, or answered with null, which the
// `GlobalAlloc` contract allows for any allocation (callers must handle it).
unsafe impl GlobalAlloc for FailingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::fails_now() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout (the caller upholds `alloc`'s contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::fails_now() {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System` (every non-null block of this allocator did)
        // with this layout, as the caller guarantees.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::fails_now() {
            // The old block stays valid, as `realloc` promises on failure.
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the block came from `System` with `layout`.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

/// The model's view of this allocator (`support/model.rs`).
pub struct ThreadFaults;

impl super::model::AllocationFaults for ThreadFaults {
    fn arm(&mut self, nth: u32) {
        FailingAllocator::arm(nth);
    }
    fn disarm(&mut self) -> bool {
        FailingAllocator::disarm()
    }
}
