//! The SDK's global allocator: dlmalloc, as Rust's std uses on wasm32, with
//! one change that matters to a host that instantiates a step afresh for
//! every call. Its first memory comes from the free end of the initial linear
//! memory (between `__heap_base` and the end of the memory the module starts
//! with); only when that is used up does it grow the memory.
//!
//! std's dlmalloc grows the memory on its first allocation whatever is free.
//! For the host every `memory.grow` of a call costs two `mprotect` calls:
//! one to open the pages, and one when the next call's instance reuses the
//! memory slot and closes them again, which also makes the kernel flush the
//! TLBs of every CPU the host's threads ran on. On a short step that was a
//! fifth of the host's whole cost of the call. A step that starts within its
//! initial memory pays neither.
//!
//! The free end is only large enough when the component is linked with
//! room for a heap: `-C link-arg=--initial-heap=131072` (`cargo xtask
//! plugins` passes it). Without it the free end is smaller than dlmalloc's
//! first request, and the allocator grows the memory at once, as std's does.
//! A plugin with its own `#[global_allocator]` turns this one off with
//! `default-features = false`.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::{Cell, UnsafeCell};
use core::ptr;

// A Wasm instance runs on one thread: no lock is needed, as in std's own
// dlmalloc for wasm32. Shared-memory threads would need one.
#[cfg(target_feature = "atomics")]
compile_error!(
    "the SDK's allocator is single-threaded; build without atomics or turn off the `allocator` feature"
);

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Set by the linker: the first byte after the stack and static data.
    static __heap_base: u8;
    /// Set by the linker: the end of the initial memory.
    static __heap_end: u8;
}

/// Where dlmalloc gets memory from: the initial memory's free end once,
/// then `memory.grow`.
struct Source {
    initial_taken: Cell<bool>,
}

// SAFETY: the instance is single-threaded (see the `atomics` check above).
unsafe impl Send for Source {}

impl Source {
    /// The free end of the initial memory, if nothing has used it and it
    /// holds `size` bytes. Fresh pages of a fresh instance read as zeros.
    fn initial(&self, size: usize) -> Option<(*mut u8, usize)> {
        if self.initial_taken.replace(true) {
            return None;
        }
        let base = (&raw const __heap_base) as usize;
        let base = base.checked_add(15)? & !15;
        // The linker's end of the initial memory, not the current size: a
        // guest that grew the memory itself before its first allocation
        // owns the pages it grew.
        let end = (&raw const __heap_end) as usize;
        let free = end.checked_sub(base)?;
        (free >= size).then_some((base as *mut u8, free))
    }
}

// SAFETY: every region returned is memory of this instance that nothing
// else uses: the initial free end once, or pages `memory.grow` just added.
unsafe impl dlmalloc::Allocator for Source {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        if let Some((base, len)) = self.initial(size) {
            return (base, len, 0);
        }
        let pages = size.div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        ((previous * PAGE) as *mut u8, pages * PAGE, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

/// The allocator every plugin built on the SDK uses (feature `allocator`).
pub struct Heap(UnsafeCell<dlmalloc::Dlmalloc<Source>>);

// SAFETY: single-threaded instance, as above.
unsafe impl Sync for Heap {}

impl Heap {
    const fn new() -> Heap {
        Heap(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(
            Source {
                initial_taken: Cell::new(false),
            },
        )))
    }
}

// SAFETY: forwards to dlmalloc, which upholds `GlobalAlloc`'s contract; the
// one thread of the instance is the only caller, so `&mut` is unique.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

#[global_allocator]
static HEAP: Heap = Heap::new();
