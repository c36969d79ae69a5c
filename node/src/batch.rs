//! Watch inputs taken in batches: after the first, whatever is already waiting (up to
//! [`MAX_BATCH`]), so a burst of changes costs one rebuild or one transaction. Over tokio channels
//! and watches a batch may end sooner, when the task's cooperative budget runs out.

use futures::{FutureExt, Stream, StreamExt};

/// The most inputs one batch takes.
pub const MAX_BATCH: usize = 1024;

/// Appends to `batch` the inputs `inputs` has ready now, without waiting.
pub fn take_ready<S: Stream + Unpin>(batch: &mut Vec<S::Item>, inputs: &mut S) {
    while batch.len() < MAX_BATCH {
        match inputs.next().now_or_never() {
            Some(Some(more)) => batch.push(more),
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_is_waiting_and_never_waits() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut inputs = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        for i in 0..3 {
            tx.send(i).unwrap_or_default();
        }
        let mut batch = vec![inputs.next().await.unwrap_or_default()];
        take_ready(&mut batch, &mut inputs);
        assert_eq!(batch, vec![0, 1, 2]);
        take_ready(&mut batch, &mut inputs);
        assert_eq!(batch.len(), 3, "nothing more is waiting: it returns at once");
        // A batch stops at MAX_BATCH (a tokio channel may end it sooner: its cooperative budget
        // makes a receive pending after about 128 in one task poll).
        let mut endless = futures::stream::iter(0..);
        let mut batch = Vec::new();
        take_ready(&mut batch, &mut endless);
        assert_eq!(batch.len(), MAX_BATCH);
    }
}
