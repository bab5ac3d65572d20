//! Point reads of concurrent requests, gathered into one statement. A relational database
//! spends most of a primary-key lookup on the statement around it (protocol, executor
//! start-up, the socket; on SQLite the driver's thread hand-offs), not on the lookup itself,
//! so under load one statement that answers every lookup waiting costs little more than one
//! that answers a single lookup.
//!
//! A few batches run at once. A lookup that finds a slot free is read at once, alone: below
//! saturation nothing waits for company. Lookups that arrive while every slot is taken queue,
//! and the next free slot takes all of them. Each batch is read after its lookups arrived,
//! so an answer is never older than its request.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{StorageError, StorageResult};

/// A lookup waiting for its batch, and where its answer goes.
type Waiting<Q, A> = (Q, oneshot::Sender<StorageResult<A>>);

/// Lookups of type `Q` answered with `A`, read in batches by a function given at start.
#[derive(Debug)]
pub struct Batched<Q, A> {
    queue: mpsc::Sender<Waiting<Q, A>>,
}

impl<Q, A> Clone for Batched<Q, A> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batched<Q, A> {
    /// Starts the task that gathers lookups into batches of at most `max`, with at most
    /// `slots` batches being read at once. `read` answers a batch in its order. The task
    /// ends when the last clone of the handle is dropped.
    pub fn spawn<F, R>(max: usize, slots: usize, read: F) -> Self
    where
        F: Fn(Vec<Q>) -> R + Send + 'static,
        R: Future<Output = StorageResult<Vec<A>>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(4 * max * slots);
        tokio::spawn(gather(waiting, max.max(1), slots.max(1), read));
        Self { queue }
    }

    /// Reads `query` with the next batch.
    pub async fn get(&self, query: Q) -> StorageResult<A> {
        let stopped = || StorageError::Read("the batched reader has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue.send((query, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Takes a free slot, then every lookup waiting (at least one), and reads them in a task of
/// their own, until every handle is gone.
async fn gather<Q, A, F, R>(
    mut waiting: mpsc::Receiver<Waiting<Q, A>>,
    max: usize,
    slots: usize,
    read: F,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Q>) -> R,
    R: Future<Output = StorageResult<Vec<A>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(slots));
    let mut batch = Vec::with_capacity(max);
    // The semaphore is never closed, so acquiring fails only if it were.
    while let Ok(slot) = slots.clone().acquire_owned().await {
        if waiting.recv_many(&mut batch, max).await == 0 {
            break;
        }
        let (queries, replies): (Vec<Q>, Vec<_>) = batch.drain(..).unzip();
        let reading = read(queries);
        tokio::spawn(async move {
            let answers = reading.await;
            drop(slot);
            answer(replies, answers);
        });
    }
}

/// Hands each lookup its answer, or each the batch's error.
fn answer<A>(replies: Vec<oneshot::Sender<StorageResult<A>>>, answers: StorageResult<Vec<A>>) {
    let answers = answers.and_then(|answers| {
        if answers.len() == replies.len() {
            Ok(answers)
        } else {
            Err(StorageError::Corrupt(format!(
                "a batch of {} lookups got {} answers",
                replies.len(),
                answers.len()
            )))
        }
    });
    match answers {
        // A caller that gave up has dropped its receiver; its answer goes nowhere.
        Ok(answers) => replies.into_iter().zip(answers).for_each(|(r, a)| drop(r.send(Ok(a)))),
        Err(e) => {
            let message = e.to_string();
            let unavailable = e.is_unavailable();
            for reply in replies {
                let e = if unavailable {
                    StorageError::Unavailable(message.clone())
                } else {
                    StorageError::Read(message.clone())
                };
                drop(reply.send(Err(e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Doubles each number; counts batches and remembers the largest.
    fn doubler(batches: Arc<AtomicUsize>, largest: Arc<AtomicUsize>) -> Batched<u64, u64> {
        Batched::spawn(64, 2, move |queries: Vec<u64>| {
            batches.fetch_add(1, Ordering::SeqCst);
            largest.fetch_max(queries.len(), Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(queries.into_iter().map(|q| q * 2).collect())
            }
        })
    }

    #[tokio::test]
    async fn concurrent_lookups_share_batches_and_each_gets_its_own_answer() {
        let (batches, largest) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let reader = doubler(batches.clone(), largest.clone());
        let lookups = (0..200u64).map(|n| {
            let reader = reader.clone();
            tokio::spawn(async move { (n, reader.get(n).await) })
        });
        for lookup in futures::future::join_all(lookups).await {
            let (n, answer) = lookup.expect("task");
            assert_eq!(answer.expect("answer"), 2 * n);
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 200, "200 concurrent lookups took {batches} batches");
        assert!(largest.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test]
    async fn a_lone_lookup_is_read_at_once_and_alone() {
        let (batches, largest) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let reader = doubler(batches.clone(), largest.clone());
        for n in 0..3 {
            assert_eq!(reader.get(n).await.expect("answer"), 2 * n);
        }
        assert_eq!(batches.load(Ordering::SeqCst), 3);
        assert_eq!(largest.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_or_short_batch_fails_each_of_its_lookups() {
        let failing: Batched<u64, u64> = Batched::spawn(8, 1, |queries: Vec<u64>| async move {
            if queries.contains(&7) {
                Err(StorageError::Corrupt("seven".into()))
            } else {
                Ok(queries)
            }
        });
        assert!(matches!(failing.get(7).await, Err(StorageError::Read(m)) if m.contains("seven")));
        assert_eq!(failing.get(1).await.expect("answer"), 1);
        let short: Batched<u64, u64> = Batched::spawn(8, 1, |_| async { Ok(Vec::new()) });
        assert!(
            matches!(short.get(1).await, Err(StorageError::Read(m)) if m.contains("0 answers"))
        );
    }
}
