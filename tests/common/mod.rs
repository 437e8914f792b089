//! What several test files share: a global allocator that counts the allocations each
//! thread makes (tests run in parallel threads), for the "a step allocates nothing after
//! its first call" checks. A test file uses it with `mod common;`; the allocator is
//! installed for that test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations (and reallocations) this thread has made so far.
#[allow(dead_code)] // not every test file reads the raw count
pub fn allocations() -> usize {
    ALLOCATIONS.try_with(|c| c.get()).unwrap_or(0)
}

/// The allocations `f` makes on this thread.
#[allow(dead_code)] // not every test file counts a closure
pub fn count(f: impl FnOnce()) -> usize {
    let before = allocations();
    f();
    allocations() - before
}

/// The "allocates nothing" checks pass only if the counter counts: it sees a `Vec`'s
/// allocation (in every test binary that uses this module).
#[test]
fn the_counter_sees_an_allocation() {
    let n = count(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(n, 1);
}
