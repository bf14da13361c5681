//! A link's send queue: encoded frames waiting for the link's writer, bounded both in frames
//! and in bytes.
//!
//! A count alone bounds too little (a few frames at the largest frame size are megabytes)
//! or too much: a link between two SIP front-ends carries a dozen thousand small frames a
//! second, and a queue of a few hundred frames overflowed whenever the writer's thread was
//! held up for some 20 ms, losing in-dialog messages of established calls. So the queue
//! holds many frames but no more than a byte budget, and the channel only allocates for the
//! frames actually waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue holds its frame or byte budget (or, for bulk frames, all but the reserve).
    Full,
    /// The link's writer is gone; the frame comes back.
    Closed(Vec<u8>),
}

/// The loop's side: offers frames.
#[derive(Debug)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
    frames_max: usize,
    bytes_max: usize,
}

/// The writer's side: takes frames and gives their bytes back to the budget.
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: mpsc::Receiver<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `frames` frames and `bytes` bytes (each at least 1).
pub(crate) fn send_queue(frames: usize, bytes: usize) -> (QueueTx, QueueRx) {
    let frames = frames.max(1);
    let (tx, rx) = mpsc::channel(frames);
    let used = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            bytes: used.clone(),
            frames_max: frames,
            bytes_max: bytes.max(1),
        },
        QueueRx { rx, bytes: used },
    )
}

impl QueueTx {
    /// Queue `frame` unless that would leave less than `1/reserve_div` of either budget free
    /// (`reserve_div` 0: use the whole budget). An empty queue always takes one frame, so a
    /// frame larger than the byte budget (at most the largest frame) still goes out.
    pub(crate) fn offer(&self, frame: Vec<u8>, reserve_div: usize) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed(frame));
        }
        let (frames_free, bytes_max) = match reserve_div {
            0 => (0, self.bytes_max),
            d => (self.frames_max / d, self.bytes_max - self.bytes_max / d),
        };
        let len = frame.len();
        let queued = self.bytes.load(Ordering::Relaxed);
        if self.tx.capacity() <= frames_free || (queued > 0 && queued + len > bytes_max) {
            return Err(Refused::Full);
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(Refused::Full),
                    mpsc::error::TrySendError::Closed(f) => Err(Refused::Closed(f)),
                }
            }
        }
    }
}

impl QueueRx {
    /// The next frame; `None` once the loop has dropped its side and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Vec<u8>> {
        let f = self.rx.recv().await?;
        self.bytes.fetch_sub(f.len(), Ordering::Relaxed);
        Some(f)
    }

    /// The next frame if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Vec<u8>> {
        let f = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(f.len(), Ordering::Relaxed);
        Some(f)
    }

    /// Whether no frame is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
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
}
