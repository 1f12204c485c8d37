//! The binary's global allocator: mimalloc 2.x, called through its plain entry points for
//! the alignments every allocation of ours has.
//!
//! Why mimalloc: the pipeline allocates and frees many small buffers per event; glibc's
//! malloc spent about 40 % of the CPU of a saturated run in allocation (perf). Why its 2.x
//! line (`libmimalloc-sys` feature `v2`): with 3.x the resident memory with ~95k events
//! waiting in a sink's buffer was 1.28-1.37× their payload against 1.14-1.16× (3.x keeps
//! more resident for the same live data; glibc: 0.98×), for the same instructions per event
//! (BENCHMARKS.md).
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it calls the aligned entry points
//! (`mi_malloc_aligned`, `mi_realloc_aligned`) for every allocation, which check the
//! alignment and go through two more calls before the same small-block path; those calls
//! were 1.4 % of a saturated OCSF-to-Kafka run's time (perf). mimalloc's plain entry points
//! return blocks aligned to at least a machine word for every size (8 bytes on 64-bit
//! targets, where blocks over 8 bytes are 16-aligned: `mi_malloc_is_naturally_aligned` in
//! its sources relies on it), so layouts aligned to a word or less take them; larger
//! alignments keep the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Largest alignment mimalloc's plain calls guarantee for any size: a machine word.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// The global allocator (see the module docs).
pub struct Allocator;

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the asked
// size with at least the asked alignment (the plain calls only for alignments they always
// meet, see `PLAIN_ALIGN`), or null on failure; `mi_free` takes a block of any of them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size from 1 to 300 bytes (and some large ones) at every alignment from 1 to
    /// 4096: the block is aligned, writable over its whole size, keeps its bytes through a
    /// growing and a shrinking realloc, and a zeroed block reads as zeros.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = Allocator;
        let sizes = (1..=300).chain([1000, 4096, 65_536, 300_000, 5 << 20]);
        for size in sizes {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes, valid layouts; each block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "grown: size {size} align {align}");
                    assert!(
                        (0..size).all(|i| *q.add(i) == (i % 251) as u8),
                        "grown: size {size} align {align}"
                    );
                    let grown = Layout::from_size_align(size * 3, align).unwrap();
                    let small = size.div_ceil(2);
                    let r = a.realloc(q, grown, small);
                    assert_eq!(r as usize % align, 0, "shrunk: size {size} align {align}");
                    assert!(
                        (0..small).all(|i| *r.add(i) == (i % 251) as u8),
                        "shrunk: size {size} align {align}"
                    );
                    a.dealloc(r, Layout::from_size_align(small, align).unwrap());

                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed: size {size} align {align}");
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
