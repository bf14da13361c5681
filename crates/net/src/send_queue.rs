//! A link's send queue: encoded frames waiting for the link's writer, bounded both in frames
//! and in bytes.
//!
//! A count alone bounds too little (a few frames at the largest frame size are megabytes)
//! or too much: a link between two SIP front-ends carries a dozen thousand small frames a
//! second, and a queue of a few hundred frames overflowed whenever the writer's thread was
//! held up for some 20 ms, losing in-dialog messages of established calls. So the queue
//! holds many frames but no more than a byte budget, and allocates only for the frames
//! actually waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Frames above which an emptied queue gives its frame ring back (a burst's ring must not
/// stay with an idle link).
const KEEP_RING: usize = 16;

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue holds its frame or byte budget (or, for bulk frames, all but the reserve).
    Full,
    /// The link's writer is gone; the frame comes back.
    Closed(Vec<u8>),
}

/// What both sides share: the frames, guarded by a lock that each side holds only to push
/// or pop, and a wake-up for the writer. Nothing is allocated for an empty queue (a channel
/// would preallocate a block of slots for each of the dozens of links a peer holds).
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    tx_gone: bool,
    rx_gone: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Pushing and popping leave the state whole even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The loop's side: offers frames.
#[derive(Debug)]
pub(crate) struct QueueTx {
    shared: Arc<Shared>,
    frames_max: usize,
    bytes_max: usize,
}

/// The writer's side: takes frames and gives their bytes back to the budget.
#[derive(Debug)]
pub(crate) struct QueueRx {
    shared: Arc<Shared>,
}

/// A queue of at most `frames` frames and `bytes` bytes (each at least 1).
pub(crate) fn send_queue(frames: usize, bytes: usize) -> (QueueTx, QueueRx) {
    let shared = Arc::new(Shared::default());
    (
        QueueTx {
            shared: shared.clone(),
            frames_max: frames.max(1),
            bytes_max: bytes.max(1),
        },
        QueueRx { shared },
    )
}

impl QueueTx {
    /// Queue `frame` unless that would leave less than `1/reserve_div` of either budget free
    /// (`reserve_div` 0: use the whole budget). An empty queue always takes one frame, so a
    /// frame larger than the byte budget (at most the largest frame) still goes out.
    pub(crate) fn offer(&self, frame: Vec<u8>, reserve_div: usize) -> Result<(), Refused> {
        let (frames_free, bytes_max) = match reserve_div {
            0 => (0, self.bytes_max),
            d => (self.frames_max / d, self.bytes_max - self.bytes_max / d),
        };
        let mut st = self.shared.state();
        if st.rx_gone {
            return Err(Refused::Closed(frame));
        }
        let len = frame.len();
        let queued = st.bytes;
        if self.frames_max - st.frames.len() <= frames_free
            || (queued > 0 && queued + len > bytes_max)
        {
            return Err(Refused::Full);
        }
        st.bytes += len;
        st.frames.push_back(frame);
        drop(st);
        self.shared.wake.notify_one();
        Ok(())
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        self.shared.state().tx_gone = true;
        self.shared.wake.notify_one();
    }
}

impl QueueRx {
    /// The next frame; `None` once the loop has dropped its side and the queue is empty.
    /// Cancel-safe: a frame is taken only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            {
                let mut st = self.shared.state();
                if let Some(f) = pop(&mut st) {
                    return Some(f);
                }
                if st.tx_gone {
                    return None;
                }
            }
            // A frame offered after the check above left a permit: this returns at once.
            self.shared.wake.notified().await;
        }
    }

    /// The next frame if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Vec<u8>> {
        pop(&mut self.shared.state())
    }

    /// Whether no frame is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.state().frames.is_empty()
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        st.rx_gone = true;
        st.frames = VecDeque::new();
        st.bytes = 0;
    }
}

/// The oldest frame, its bytes given back; an emptied ring larger than [`KEEP_RING`] is freed.
fn pop(st: &mut State) -> Option<Vec<u8>> {
    let f = st.frames.pop_front()?;
    st.bytes -= f.len();
    if st.frames.is_empty() && st.frames.capacity() > KEEP_RING {
        st.frames = VecDeque::new();
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_by_bytes_and_frames_and_given_back_as_written() {
        let (tx, mut rx) = send_queue(4, 1000);
        tx.offer(vec![0; 600], 0).unwrap();
        // 600 + 600 is over the byte budget although frames are free.
        assert!(matches!(tx.offer(vec![0; 600], 0), Err(Refused::Full)));
        tx.offer(vec![0; 300], 0).unwrap();
        assert_eq!(rx.recv().await.map(|f| f.len()), Some(600));
        // The written frame's bytes are free again.
        tx.offer(vec![0; 600], 0).unwrap();
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(300));
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(600));
        assert!(rx.is_empty());
        // The frame count bounds small frames.
        for _ in 0..4 {
            tx.offer(vec![0; 1], 0).unwrap();
        }
        assert!(matches!(tx.offer(vec![0; 1], 0), Err(Refused::Full)));
    }

    #[tokio::test]
    async fn a_reserve_keeps_room_and_an_empty_queue_takes_a_large_frame() {
        let (tx, mut rx) = send_queue(8, 800);
        // A frame over the whole byte budget still goes out when nothing else waits.
        tx.offer(vec![0; 2000], 0).unwrap();
        assert!(matches!(tx.offer(vec![0; 1], 0), Err(Refused::Full)));
        rx.recv().await.unwrap();
        // With a reserve of 1/4, bulk frames stop at 600 bytes; others may use all 800.
        tx.offer(vec![0; 500], 4).unwrap();
        assert!(matches!(tx.offer(vec![0; 200], 4), Err(Refused::Full)));
        tx.offer(vec![0; 200], 0).unwrap();
        assert!(matches!(tx.offer(vec![0; 150], 0), Err(Refused::Full)));
        // ... and at 2 free frames of 8.
        let (tx, rx) = send_queue(8, 10_000);
        for _ in 0..6 {
            tx.offer(vec![0; 1], 4).unwrap();
        }
        assert!(matches!(tx.offer(vec![0; 1], 4), Err(Refused::Full)));
        tx.offer(vec![0; 1], 0).unwrap();
        drop(rx);
        assert!(matches!(tx.offer(vec![7], 0), Err(Refused::Closed(f)) if f == vec![7]));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame_and_ends_when_the_loop_lets_go() {
        let (tx, mut rx) = send_queue(4, 1000);
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(f) = rx.recv().await {
                got.push(f);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.offer(vec![1], 0).unwrap();
        tokio::task::yield_now().await;
        tx.offer(vec![2, 2], 0).unwrap();
        drop(tx);
        assert_eq!(writer.await.unwrap(), vec![vec![1], vec![2, 2]]);
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_ring_back() {
        let (tx, mut rx) = send_queue(4096, 1 << 20);
        for _ in 0..1000 {
            tx.offer(vec![0; 8], 0).unwrap();
        }
        assert!(rx.shared.state().frames.capacity() >= 1000);
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.state().frames.capacity(), 0);
        assert_eq!(rx.shared.state().bytes, 0);
    }
}
