//! Requests that wait together, written together: one task takes every
//! request waiting when it is free (up to a maximum) and writes them with
//! one statement and one commit, each caller awaiting its own answer. Under
//! load many requests share a commit; alone a request costs what it did on
//! its own.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The waiting side of a writer's channel.
pub struct Batches<T> {
    waiting: mpsc::Receiver<T>,
    max: usize,
}

impl<T> Batches<T> {
    /// Batches of at most `max` (at least one) from `waiting`.
    pub fn new(waiting: mpsc::Receiver<T>, max: usize) -> Self {
        Self {
            waiting,
            max: max.max(1),
        }
    }

    /// The next batch: the first request to arrive and whatever else is
    /// waiting by then. After `cancel` only what is already waiting, so no
    /// accepted request is dropped; `None` once there is none.
    pub async fn next(&mut self, cancel: &CancellationToken) -> Option<Vec<T>> {
        let first = if cancel.is_cancelled() {
            None
        } else {
            tokio::select! {
                _ = cancel.cancelled() => None,
                first = self.waiting.recv() => first,
            }
        };
        let first = match first {
            Some(first) => first,
            None => {
                self.waiting.close();
                self.waiting.try_recv().ok()?
            }
        };
        let mut batch = vec![first];
        while batch.len() < self.max {
            match self.waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_requests_come_together_and_none_is_dropped_on_cancel() {
        let (sender, waiting) = mpsc::channel(16);
        let mut batches = Batches::new(waiting, 3);
        let cancel = CancellationToken::new();
        for n in 0..5 {
            sender.send(n).await.unwrap();
        }
        assert_eq!(batches.next(&cancel).await, Some(vec![0, 1, 2]));
        cancel.cancel();
        assert_eq!(batches.next(&cancel).await, Some(vec![3, 4]));
        assert_eq!(batches.next(&cancel).await, None);
        assert!(sender.send(5).await.is_err(), "closed after the cancel");
    }
}
