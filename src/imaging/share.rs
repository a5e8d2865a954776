//! One decode for concurrent renders of the same file, such as a srcset burst (the same
//! photo at 400, 800 and 1200 wide requested together).
//!
//! Every render joins its file's slot *before* it waits for a CPU slot, bringing the
//! source it would decode on its own (the original or a reduced copy, already read) and
//! how large a decode it needs. The first render to reach a CPU decodes once for all
//! current members: the best source any member brought (the original over copies, a
//! larger copy over a smaller one) at the largest size any member needs. So a burst whose
//! members would have picked different copies (400 and 800 wide from the 1800 copy, 1200
//! from the 2560 one) still decodes once. Members that arrive at the CPU while that
//! decode runs wait for it, later ones reuse the result when it is good enough for them.
//! The decoded pixels live exactly as long as some member of the burst still holds its
//! ticket, so the sharing costs no memory beyond the burst itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use super::ImagingError;
use super::decode::{Decoded, Precision};
use super::pyramid::Original;

type Shared = Result<(Arc<Decoded>, Arc<Source>), ImagingError>;

/// Scales within this fraction count as equal (copies' sizes are rounded to whole pixels).
const SCALE_TOLERANCE: f64 = 0.001;

/// What one render would decode on its own.
#[derive(Debug)]
pub struct Source {
    pub bytes: Bytes,
    /// Set when `bytes` are a reduced copy of the original.
    pub reduced: Option<Original>,
    /// Higher is better: a copy's long edge; `u32::MAX` for the original.
    pub rank: u32,
    /// Decoded pixels per original pixel (the smaller of the two axes) that the render
    /// needs: what its own decode would give.
    pub need: f64,
    /// The coefficient precision the render needs.
    pub precision: Precision,
}

impl Source {
    /// Whether a decode of `other` at scale `scale` and `precision` serves this render as
    /// well as its own.
    fn served_by(&self, other: &Source, scale: f64, precision: Precision) -> bool {
        other.rank >= self.rank
            && scale >= self.need * (1.0 - SCALE_TOLERANCE)
            && precision >= self.precision
    }
}

/// The registry of files being rendered right now.
#[derive(Default)]
pub struct DecodeShare {
    slots: Mutex<HashMap<String, Slot>>,
    next_ticket: AtomicU64,
    /// Decodes run.
    decodes: Counter,
    /// Renders that used another render's decode.
    reused: Counter,
}

impl std::fmt::Debug for DecodeShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeShare")
            .field("decodes", &self.decodes.get())
            .field("reused", &self.reused.get())
            .finish()
    }
}

struct Slot {
    /// Every current member's own source, by ticket number.
    members: Vec<(u64, Arc<Source>)>,
    state: State,
}

enum State {
    Empty,
    /// A decode of `source` at scale `scale` or larger, with `precision` or better, runs
    /// (or ran) for the members.
    Decoding {
        source: Arc<Source>,
        scale: f64,
        precision: Precision,
        done: Arc<Done>,
    },
}

#[derive(Default)]
struct Done {
    result: Mutex<Option<Shared>>,
    ready: Condvar,
}

impl Done {
    fn finish(&self, result: Shared) {
        *lock(&self.result) = Some(result);
        self.ready.notify_all();
    }

    fn wait(&self) -> Shared {
        let mut guard = lock(&self.result);
        loop {
            if let Some(result) = guard.as_ref() {
                return result.clone();
            }
            guard = self
                .ready
                .wait(guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A poisoned lock only means a decoder panicked (caught by `render`); the map is intact.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DecodeShare {
    /// A registry that counts into `decodes` and `reused`.
    pub fn new(decodes: Counter, reused: Counter) -> DecodeShare {
        DecodeShare {
            decodes,
            reused,
            ..DecodeShare::default()
        }
    }

    /// Joins the renders of `file` (any string naming the original) with the source this
    /// render would decode on its own.
    pub fn join(self: &Arc<Self>, file: String, source: Source) -> Ticket {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let source = Arc::new(source);
        let mut slots = lock(&self.slots);
        slots
            .entry(file.clone())
            .or_insert(Slot {
                members: Vec::new(),
                state: State::Empty,
            })
            .members
            .push((id, source.clone()));
        Ticket {
            share: self.clone(),
            file,
            id,
            source,
        }
    }

    /// Files with at least one member (for tests and debugging).
    pub fn active(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// Membership of one render in its file's slot; leaving happens on drop.
pub struct Ticket {
    share: Arc<DecodeShare>,
    file: String,
    id: u64,
    source: Arc<Source>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("file", &self.file)
            .field("rank", &self.source.rank)
            .field("need", &self.source.need)
            .finish()
    }
}

impl Ticket {
    /// The decoded image and the source it came from: another member's decode when it
    /// serves this render as well as its own would, else the result of
    /// `decode(source, scale, precision)`, run here on the best source of the current
    /// members at the largest scale and precision any of them needs. `decode` must decode
    /// `source` at `scale` decoded pixels per original pixel or more, with `precision` or
    /// better.
    pub fn decoded(
        &self,
        decode: impl FnOnce(&Source, f64, Precision) -> Result<Decoded, ImagingError>,
    ) -> Shared {
        let share = &self.share;
        let mut slots = lock(&share.slots);
        let slot = slots
            .get_mut(&self.file)
            .expect("a ticket keeps its slot alive");
        if let State::Decoding {
            source,
            scale,
            precision,
            done,
        } = &slot.state
            && self.source.served_by(source, *scale, *precision)
        {
            let done = done.clone();
            drop(slots);
            let result = done.wait();
            share.reused.inc();
            return result;
        }
        let best = slot
            .members
            .iter()
            .map(|(_, s)| s)
            .max_by_key(|s| s.rank)
            .expect("this ticket is a member")
            .clone();
        // Members with a better source than `best` do not exist; every member's need is
        // met by `best` at the largest need.
        let scale = slot
            .members
            .iter()
            .map(|(_, s)| s.need)
            .fold(self.source.need, f64::max);
        let precision = slot
            .members
            .iter()
            .map(|(_, s)| s.precision)
            .fold(self.source.precision, Precision::max);
        let done = Arc::new(Done::default());
        slot.state = State::Decoding {
            source: best.clone(),
            scale,
            precision,
            done: done.clone(),
        };
        drop(slots);

        let result = decode(&best, scale, precision).map(|d| (Arc::new(d), best));
        share.decodes.inc();
        done.finish(result.clone());
        if result.is_err() {
            // Not remembered: a retry decodes again.
            let mut slots = lock(&share.slots);
            if let Some(slot) = slots.get_mut(&self.file)
                && matches!(&slot.state, State::Decoding { done: d, .. } if Arc::ptr_eq(d, &done))
            {
                slot.state = State::Empty;
            }
        }
        result
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut slots = lock(&self.share.slots);
        if let Some(slot) = slots.get_mut(&self.file) {
            slot.members.retain(|(id, _)| *id != self.id);
            if slot.members.is_empty() {
                slots.remove(&self.file);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};
    use std::sync::Barrier;
    use std::sync::atomic::AtomicU32;

    /// A render of an 800-pixel-wide original, from the original (`rank` MAX) or a copy
    /// `rank` pixels wide, decoded at 1/`shrink`.
    fn source(rank: u32, shrink: u32) -> Source {
        let width = rank.min(800);
        Source {
            bytes: Bytes::from(format!("{rank}")),
            reduced: None,
            rank,
            need: f64::from(width) / f64::from(shrink) / 800.0,
            precision: Precision::Full,
        }
    }

    /// `source`, for a render that does not need the last bit (a lossy downscale).
    fn lossy(rank: u32, shrink: u32) -> Source {
        Source {
            precision: Precision::Visible,
            ..source(rank, shrink)
        }
    }

    /// What `decode` gives for `source` at `scale` and `precision`: an image that wide (the
    /// "bytes" name the source).
    fn fake(source: &Source, scale: f64, precision: Precision) -> Decoded {
        let side = (800.0 * scale).round() as u32;
        let from: u32 = std::str::from_utf8(&source.bytes).unwrap().parse().unwrap();
        Decoded {
            image: DynamicImage::ImageRgb8(RgbImage::new(side, side)),
            icc: None,
            shrink: from,
            precision,
            source_size: (from.min(800), from.min(800)),
        }
    }

    fn share() -> Arc<DecodeShare> {
        Arc::new(DecodeShare::default())
    }

    /// Runs `tickets`' decodes at once (as CPU threads would); returns (width, source rank,
    /// precision).
    fn race(tickets: &[Ticket], runs: &AtomicU32) -> Vec<(u32, u32, Precision)> {
        let start = Barrier::new(tickets.len());
        std::thread::scope(|scope| {
            let handles: Vec<_> = tickets
                .iter()
                .map(|t| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        let (d, from) = t
                            .decoded(|s, scale, precision| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(50));
                                Ok(fake(s, scale, precision))
                            })
                            .unwrap();
                        (d.image.width(), from.rank, d.precision)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn a_burst_decodes_once_at_the_largest_size_wanted() {
        let share = share();
        let runs = AtomicU32::new(0);
        // Three members join before any reaches a CPU (as in the edge), with different needs.
        let tickets: Vec<Ticket> = [8, 2, 4]
            .into_iter()
            .map(|s| share.join("photo.jpg".into(), source(u32::MAX, s)))
            .collect();
        let got = race(&tickets, &runs);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            got,
            vec![(400, u32::MAX, Precision::Full); 3],
            "decoded at 1/2, the largest wanted"
        );
        assert_eq!(share.decodes.get(), 1);
        assert_eq!(share.reused.get(), 2);
        drop(tickets);
        assert_eq!(share.active(), 0, "the pixels go when the burst is over");
    }

    #[test]
    fn a_burst_over_different_copies_decodes_the_best_one_once() {
        let share = share();
        let runs = AtomicU32::new(0);
        // 400 and 800 wide would use the 640 copy at 1/1 and 1/2, 1200 the original at 1/2.
        let tickets: Vec<Ticket> = [(640, 2), (640, 1), (u32::MAX, 2)]
            .into_iter()
            .map(|(rank, shrink)| share.join("photo.jpg".into(), source(rank, shrink)))
            .collect();
        let got = race(&tickets, &runs);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The original at a scale of 640/800 (what the 1/1 copy member needs).
        assert_eq!(got, vec![(640, u32::MAX, Precision::Full); 3]);
        assert_eq!(share.reused.get(), 2);
    }

    #[test]
    fn a_later_better_need_decodes_again_and_files_do_not_mix() {
        let share = share();
        let decode = |s: &Source, scale, precision| Ok(fake(s, scale, precision));
        let small = share.join("a.jpg".into(), source(u32::MAX, 8));
        assert_eq!(small.decoded(decode).unwrap().0.image.width(), 100);
        let large = share.join("a.jpg".into(), source(u32::MAX, 1));
        assert_eq!(large.decoded(decode).unwrap().0.image.width(), 800);
        let smaller_again = share.join("a.jpg".into(), source(u32::MAX, 4));
        let reused = smaller_again
            .decoded(|_, _, _| panic!("the 1/1 decode is reused"))
            .unwrap();
        assert_eq!(reused.0.image.width(), 800);
        // A copy's decode never stands in for a render that wants the original.
        let copy_only = share.join("b.jpg".into(), source(640, 8));
        assert_eq!(copy_only.decoded(decode).unwrap().0.image.width(), 80);
        drop(copy_only);
        let c = share.join("c.jpg".into(), source(640, 1));
        let (d, from) = c.decoded(decode).unwrap();
        assert_eq!((d.image.width(), from.rank), (640, 640));
        let wants_original = share.join("c.jpg".into(), source(u32::MAX, 8));
        let (_, from) = wants_original.decoded(decode).unwrap();
        assert_eq!(from.rank, u32::MAX, "decoded again from the original");
        assert_eq!(share.decodes.get(), 5);
    }

    #[test]
    fn errors_reach_the_waiters_and_are_not_kept() {
        let share = share();
        let a = share.join("bad.jpg".into(), source(u32::MAX, 2));
        let err = a.decoded(|_, _, _| Err(ImagingError::Undecodable("truncated".into())));
        assert!(err.is_err());
        // The failed decode is not remembered: a retry decodes again.
        assert!(a.decoded(|s, scale, p| Ok(fake(s, scale, p))).is_ok());
    }

    #[test]
    fn a_member_that_needs_every_bit_gets_a_full_precision_decode() {
        // In a burst, one member needing full precision (a PNG, say) decides for all.
        let share = share();
        let runs = AtomicU32::new(0);
        let tickets = vec![
            share.join("photo.jpg".into(), lossy(u32::MAX, 4)),
            share.join("photo.jpg".into(), source(u32::MAX, 4)),
        ];
        let got = race(&tickets, &runs);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(got, vec![(200, u32::MAX, Precision::Full); 2]);
        drop(tickets);

        // One after another: a full decode serves a lossy render, not the other way round.
        let decode = |s: &Source, scale, precision| Ok(fake(s, scale, precision));
        let first = share.join("b.jpg".into(), lossy(u32::MAX, 2));
        assert_eq!(
            first.decoded(decode).unwrap().0.precision,
            Precision::Visible
        );
        let exact = share.join("b.jpg".into(), source(u32::MAX, 2));
        assert_eq!(exact.decoded(decode).unwrap().0.precision, Precision::Full);
        let lossy_again = share.join("b.jpg".into(), lossy(u32::MAX, 2));
        let (d, _) = lossy_again
            .decoded(|_, _, _| panic!("the full decode is reused"))
            .unwrap();
        assert_eq!(d.precision, Precision::Full);
        assert_eq!(share.decodes.get(), 3);
    }
}
