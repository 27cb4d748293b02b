//! The benchmark's allocator for the Rust example transform (its feature `bench-arena`): a
//! bump arena per batch call, over talc. Kept out of the example, which users copy; it takes
//! about 3% of the instructions off a call (docs/benchmarks.md).
//!
//! Nearly everything a call allocates (the events the host writes in, parsed fields, new
//! documents, the outcomes handed back) is dead once the next call begins, so memory is handed
//! out by bumping a pointer and taken back all at once, instead of one malloc and free each.
//! Two arenas take turns because the host writes a call's events into memory before the call
//! begins: a call resets the arena of the call before last, never the one holding its input.
//! What must outlive a call (the config `init` parses) is allocated `persistent`ly from talc,
//! and so is whatever does not fit; an arena that overflowed is enlarged when next reset.

// Natively (the unit tests' build) nothing but the tests uses the allocator.
#![cfg_attr(
    not(all(not(target_feature = "atomics"), target_family = "wasm")),
    allow(dead_code)
)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// The smallest and largest arena: growth stops at the largest, whatever a call allocates
/// beyond it comes from the backing allocator.
const MIN_ARENA: usize = 64 << 10;
const MAX_ARENA: usize = 8 << 20;
const ARENA_ALIGN: usize = 16;

#[derive(Clone, Copy)]
struct Arena {
    start: usize,
    end: usize,
    next: usize,
    /// Bytes of this call that did not fit.
    spilled: usize,
}

impl Arena {
    const EMPTY: Arena = Arena {
        start: 0,
        end: 0,
        next: 0,
        spilled: 0,
    };

    fn contains(&self, p: usize) -> bool {
        p >= self.start && p < self.end
    }
}

struct State {
    arenas: [Arena; 2],
    current: usize,
    /// False before the first call and inside `persistent`: everything comes from the backing.
    active: bool,
}

pub struct CallArena<B> {
    backing: B,
    state: UnsafeCell<State>,
}

// SAFETY: a component without the `atomics` feature runs on one thread, and no method holds
// the state across a call that could allocate.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
unsafe impl<B: Sync> Sync for CallArena<B> {}

impl<B: GlobalAlloc> CallArena<B> {
    pub const fn new(backing: B) -> Self {
        CallArena {
            backing,
            state: UnsafeCell::new(State {
                arenas: [Arena::EMPTY; 2],
                current: 0,
                active: false,
            }),
        }
    }

    #[allow(clippy::mut_from_ref)]
    fn state(&self) -> &mut State {
        // SAFETY: single-threaded (see `Sync`), and no caller keeps the reference past its
        // own short use.
        unsafe { &mut *self.state.get() }
    }

    /// Starts a call: switches to the other arena and frees all it held. Call it first thing
    /// in an export, before anything is allocated, and only where nothing allocated by the
    /// call before last is still in use.
    pub fn begin_call(&self) {
        let s = self.state();
        s.current ^= 1;
        let a = &mut s.arenas[s.current];
        let used = a.next - a.start + a.spilled;
        let size = a.end - a.start;
        if size == 0 || (a.spilled > 0 && size < MAX_ARENA) {
            let want = used.next_power_of_two().clamp(MIN_ARENA, MAX_ARENA);
            // SAFETY: the old arena's allocations are all dead (the contract above).
            unsafe {
                if size > 0 {
                    self.backing.dealloc(
                        a.start as *mut u8,
                        Layout::from_size_align_unchecked(size, ARENA_ALIGN),
                    );
                }
                let layout = Layout::from_size_align_unchecked(want, ARENA_ALIGN);
                let p = self.backing.alloc(layout) as usize;
                // Out of memory for an arena: this call runs on the backing allocator alone.
                *a = if p == 0 {
                    Arena::EMPTY
                } else {
                    Arena {
                        start: p,
                        end: p + want,
                        next: p,
                        spilled: 0,
                    }
                };
            }
        }
        a.next = a.start;
        a.spilled = 0;
        s.active = true;
    }

    /// Runs `f` with every allocation from the backing allocator, for what outlives the call.
    pub fn persistent<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = std::mem::replace(&mut self.state().active, false);
        let r = f();
        self.state().active = was;
        r
    }

    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let s = self.state();
        if !s.active {
            return None;
        }
        let a = &mut s.arenas[s.current];
        let p = a.next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        match p.checked_add(layout.size()) {
            Some(end) if end <= a.end => {
                a.next = end;
                Some(p as *mut u8)
            }
            _ => {
                a.spilled += layout.size();
                None
            }
        }
    }

    fn arena_of(&self, p: *mut u8) -> Option<&mut Arena> {
        let s = self.state();
        let p = p as usize;
        s.arenas.iter_mut().find(|a| a.contains(p))
    }
}

// SAFETY: arena blocks never overlap (the pointer only moves forward between resets) and lie
// inside a block of the backing allocator; every other block is the backing allocator's own.
unsafe impl<B: GlobalAlloc> GlobalAlloc for CallArena<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(p) => p,
            None => unsafe { self.backing.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match self.arena_of(p) {
            // The newest block (a temporary) is taken back at once; the rest go with the arena.
            Some(a) => {
                if p as usize + layout.size() == a.next {
                    a.next = p as usize;
                }
            }
            None => unsafe { self.backing.dealloc(p, layout) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(a) = self.arena_of(p) else {
            return unsafe { self.backing.realloc(p, layout, new_size) };
        };
        let start = p as usize;
        if start + layout.size() == a.next && start + new_size <= a.end {
            a.next = start + new_size;
            return p;
        }
        if new_size <= layout.size() {
            return p;
        }
        // SAFETY: the caller's layout with the new size is valid (GlobalAlloc's contract).
        let q = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !q.is_null() {
            unsafe { core::ptr::copy_nonoverlapping(p, q, layout.size()) };
        }
        q
    }
}

#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: CallArena<talc::wasm::WasmDynamicTalc> =
    CallArena::new(talc::wasm::new_wasm_dynamic_allocator());

/// `begin_call` on the component's allocator (nothing in native tests).
pub fn begin_call() {
    #[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
    ALLOCATOR.begin_call();
}

/// `persistent` on the component's allocator (just `f()` in native tests).
pub fn persistent<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
    return ALLOCATOR.persistent(f);
    #[cfg(not(all(not(target_feature = "atomics"), target_family = "wasm")))]
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn calls_take_turns_and_keep_the_input_of_the_current_call() {
        let arena = CallArena::new(System);
        unsafe {
            // Before the first call: the backing allocator.
            let early = arena.alloc(layout(32, 8));
            assert!(arena.arena_of(early).is_none());
            arena.begin_call();
            let a1 = arena.alloc(layout(100, 8));
            assert!(arena.arena_of(a1).is_some());
            // The next call's input, written before it begins, lands in the same arena...
            let input = arena.alloc(layout(64, 8));
            input.write_bytes(7, 64);
            arena.begin_call();
            // ...which the next call does not reset.
            let a2 = arena.alloc(layout(100, 8));
            assert!(a2 < input || a2 as usize >= input as usize + 64);
            assert_eq!(*input.add(63), 7);
            // The call after that reuses the first arena from its start.
            arena.begin_call();
            assert_eq!(arena.alloc(layout(100, 8)), a1);
            arena.dealloc(early, layout(32, 8));
        }
    }

    #[test]
    fn alignment_temporaries_and_growth_in_place() {
        let arena = CallArena::new(System);
        unsafe {
            arena.begin_call();
            let _byte = arena.alloc(layout(1, 1));
            let p = arena.alloc(layout(24, 16));
            assert_eq!(p as usize % 16, 0);
            // The newest block grows in place and, freed, is taken back.
            assert_eq!(arena.realloc(p, layout(24, 16), 48), p);
            arena.dealloc(p, layout(48, 16));
            assert_eq!(arena.alloc(layout(8, 16)), p);
            // An older block moves, keeping its contents.
            let old = arena.alloc(layout(4, 4));
            old.copy_from_nonoverlapping([1u8, 2, 3, 4].as_ptr(), 4);
            let _newer = arena.alloc(layout(4, 4));
            let moved = arena.realloc(old, layout(4, 4), 8);
            assert_ne!(moved, old);
            assert_eq!(std::slice::from_raw_parts(moved, 4), [1, 2, 3, 4]);
        }
    }

    #[test]
    fn what_does_not_fit_spills_and_the_arena_grows() {
        let arena = CallArena::new(System);
        unsafe {
            arena.begin_call();
            let big = arena.alloc(layout(MIN_ARENA * 3, 8));
            assert!(
                arena.arena_of(big).is_none(),
                "spilled to the backing allocator"
            );
            arena.dealloc(big, layout(MIN_ARENA * 3, 8));
            arena.begin_call();
            arena.begin_call();
            let big = arena.alloc(layout(MIN_ARENA * 3, 8));
            assert!(arena.arena_of(big).is_some(), "the arena was enlarged");
        }
    }

    #[test]
    fn persistent_allocations_come_from_the_backing() {
        let arena = CallArena::new(System);
        unsafe {
            arena.begin_call();
            let p = arena.persistent(|| arena.alloc(layout(16, 8)));
            assert!(arena.arena_of(p).is_none());
            assert!(arena.arena_of(arena.alloc(layout(16, 8))).is_some());
            arena.dealloc(p, layout(16, 8));
        }
    }
}
