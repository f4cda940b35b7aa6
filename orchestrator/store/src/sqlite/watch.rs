//! Watches: replay history from the log, then follow the writer's broadcast. A watcher that falls
//! behind the broadcast is not dropped (as kine drops slow subscribers) but replays the missed
//! revisions from disk, so it only fails when the history it needs has been compacted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::reader;
use super::writer::CommittedBatch;
use crate::{Error, Result, Revision, WatchResponse, WatchStream};

/// Events fetched per history query.
const REPLAY_PAGE: usize = 1000;
/// Buffered responses per watcher before it stops reading the broadcast.
const WATCHER_BUFFER: usize = 64;
/// How often a watcher with only filtered-out changes reports progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn start(shared: Arc<Shared>, prefix: String, from: Revision) -> Result<WatchStream> {
    let compacted = shared.compacted.load(Ordering::SeqCst);
    if from < compacted {
        return Err(Error::Compacted {
            requested: from,
            compacted,
        });
    }
    // Subscribe before reading history: a write committed after this point is in the broadcast,
    // one committed before it is in the log; `last` drops the overlap.
    let live = shared.broadcast.subscribe();
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    let span = tracing::debug_span!("store_watch", prefix = %prefix, from);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            shared.metrics.watchers.inc();
            let _ = follow(&shared, &prefix, from, live, &tx).await;
            shared.metrics.watchers.dec();
        },
        span,
    ));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Send history after `last`; returns the revision caught up to. `Err` = the receiver is gone.
async fn replay(
    shared: &Arc<Shared>,
    prefix: &str,
    mut last: Revision,
    tx: &mpsc::Sender<Result<WatchResponse>>,
) -> Result<Revision, ()> {
    loop {
        let compacted = shared.compacted.load(Ordering::SeqCst);
        if last < compacted {
            let _ = tx
                .send(Err(Error::Compacted {
                    requested: last,
                    compacted,
                }))
                .await;
            return Err(());
        }
        let p = prefix.to_owned();
        let page = shared
            .reads
            .run(move |c| reader::history(c, &p, last, REPLAY_PAGE))
            .await;
        let (events, snapshot) = match page {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return Err(());
            }
        };
        let full = events.len() == REPLAY_PAGE;
        let caught_up = if full {
            events.last().map_or(last, |e| e.kv.mod_revision)
        } else {
            snapshot.max(last)
        };
        if !events.is_empty() {
            tx.send(Ok(WatchResponse {
                events,
                revision: caught_up,
            }))
            .await
            .map_err(|_| ())?;
        }
        last = caught_up;
        if !full {
            return Ok(last);
        }
    }
}

async fn follow(
    shared: &Arc<Shared>,
    prefix: &str,
    from: Revision,
    mut live: broadcast::Receiver<Arc<CommittedBatch>>,
    tx: &mpsc::Sender<Result<WatchResponse>>,
) -> Result<(), ()> {
    let mut last = replay(shared, prefix, from, tx).await?;
    let mut reported = last;
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return Err(()),
            _ = progress.tick() => {
                if last > reported {
                    tx.send(Ok(WatchResponse { events: Vec::new(), revision: last })).await.map_err(|_| ())?;
                    reported = last;
                }
            }
            batch = live.recv() => match batch {
                Ok(batch) => {
                    if batch.revision <= last {
                        continue;
                    }
                    let events: Vec<_> = batch
                        .events
                        .iter()
                        .filter(|e| e.kv.mod_revision > last && e.kv.key.starts_with(prefix))
                        .cloned()
                        .collect();
                    last = batch.revision;
                    if !events.is_empty() {
                        tx.send(Ok(WatchResponse { events, revision: last })).await.map_err(|_| ())?;
                        reported = last;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    shared.metrics.watch_replays_total.inc();
                    last = replay(shared, prefix, last, tx).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(()),
            }
        }
    }
}
