//! Decoding a token allocates nothing: a counting global allocator watches `Model::forward`
//! and `Model::forward_batch`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ulm_runtime::{Config, Model, Precision, Session};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The counter is global: tests that read it run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn decode_steps_do_not_allocate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Config::micro_8m();
    c.max_seq_len = 128;
    for model in [Model::random(c.clone(), 1), Model::random(c, 1).converted(Precision::Int8)] {
        let mut s = Session::new(&model);
        model.forward(&mut s, &[1, 2, 3, 4, 5]).unwrap();
        let before = ALLOCS.load(Ordering::SeqCst);
        for t in 0..20u32 {
            model.forward(&mut s, &[t + 10]).unwrap();
        }
        let n = ALLOCS.load(Ordering::SeqCst) - before;
        assert_eq!(n, 0, "{} allocations in 20 decode steps ({})", n, model.weight_format());
    }
}

#[test]
fn batched_decode_steps_do_not_allocate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Config::micro_8m();
    c.max_seq_len = 128;
    for model in [Model::random(c.clone(), 1), Model::random(c, 1).converted(Precision::Int8)] {
        let mut sessions: Vec<Session> = (0..5).map(|_| Session::new(&model)).collect();
        for (i, s) in sessions.iter_mut().enumerate() {
            model.forward(s, &vec![3; i + 1]).unwrap();
        }
        let mut batch = ulm_runtime::Batch::new(&model, 8);
        let mut rows: Vec<&mut Session> = sessions.iter_mut().collect();
        let tokens = [7u32, 8, 9, 10, 11];
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..10 {
            model.forward_batch(&mut batch, &mut rows, &tokens).unwrap();
            model.forward_batch(&mut batch, &mut rows[1..3], &tokens[1..3]).unwrap();
        }
        let n = ALLOCS.load(Ordering::SeqCst) - before;
        assert_eq!(n, 0, "{} allocations in 20 batched steps ({})", n, model.weight_format());
    }
}
