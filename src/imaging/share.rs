//! One decode for concurrent renders of the same source, such as a srcset burst (the same
//! photo at 400, 800 and 1200 wide requested together).
//!
//! Every render joins the source's slot *before* it waits for a CPU slot, saying how small
//! a decode it could live with (its JPEG shrink-on-load denominator). The first render to
//! reach a CPU decodes once at the largest size any member asked for; members that arrive
//! at the CPU while that decode runs wait for it, later ones reuse the result. The decoded
//! pixels live exactly as long as some member of the burst still holds its ticket, so the
//! sharing costs no memory beyond the burst itself.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;

use super::ImagingError;
use super::decode::Decoded;

type Shared = Result<Arc<Decoded>, ImagingError>;

/// The registry of sources being rendered right now.
#[derive(Default)]
pub struct DecodeShare {
    slots: Mutex<HashMap<String, Slot>>,
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
    members: usize,
    /// The smallest shrink denominator (largest decode) any member asked for.
    want: u32,
    state: State,
}

enum State {
    Empty,
    Decoding { shrink: u32, done: Arc<Done> },
    Ready { shrink: u32, decoded: Arc<Decoded> },
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
            slots: Mutex::default(),
            decodes,
            reused,
        }
    }

    /// Joins the renders of `source` (any string naming the exact bytes) with a decode at
    /// 1/`shrink` scale or larger acceptable.
    pub fn join(self: &Arc<Self>, source: String, shrink: u32) -> Ticket {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(source.clone()).or_insert(Slot {
            members: 0,
            want: shrink,
            state: State::Empty,
        });
        slot.members += 1;
        slot.want = slot.want.min(shrink);
        Ticket {
            share: self.clone(),
            source,
            shrink,
        }
    }

    /// Sources with at least one member (for tests and debugging).
    pub fn active(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// Membership of one render in its source's slot; leaving happens on drop.
pub struct Ticket {
    share: Arc<DecodeShare>,
    source: String,
    shrink: u32,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("source", &self.source)
            .field("shrink", &self.shrink)
            .finish()
    }
}

impl Ticket {
    /// The decoded source: another member's when it is large enough, else the result of
    /// `decode(shrink)`, run here at the largest size any current member wants.
    pub fn decoded(
        &self,
        decode: impl FnOnce(u32) -> Result<Decoded, ImagingError>,
    ) -> Result<Arc<Decoded>, ImagingError> {
        let share = &self.share;
        let mut slots = lock(&share.slots);
        let slot = slots
            .get_mut(&self.source)
            .expect("a ticket keeps its slot alive");
        match &slot.state {
            State::Ready { shrink, decoded } if *shrink <= self.shrink => {
                share.reused.inc();
                return Ok(decoded.clone());
            }
            State::Decoding { shrink, done } if *shrink <= self.shrink => {
                let done = done.clone();
                drop(slots);
                let result = done.wait();
                share.reused.inc();
                return result;
            }
            _ => {}
        }
        let shrink = slot.want.min(self.shrink);
        let done = Arc::new(Done::default());
        slot.state = State::Decoding {
            shrink,
            done: done.clone(),
        };
        drop(slots);

        let result = decode(shrink).map(Arc::new);
        share.decodes.inc();
        done.finish(result.clone());
        let mut slots = lock(&share.slots);
        if let Some(slot) = slots.get_mut(&self.source)
            && matches!(&slot.state, State::Decoding { done: d, .. } if Arc::ptr_eq(d, &done))
        {
            slot.state = match &result {
                Ok(decoded) => State::Ready {
                    shrink,
                    decoded: decoded.clone(),
                },
                Err(_) => State::Empty,
            };
        }
        result
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut slots = lock(&self.share.slots);
        if let Some(slot) = slots.get_mut(&self.source) {
            slot.members -= 1;
            if slot.members == 0 {
                slots.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fake(shrink: u32) -> Decoded {
        let side = 800 / shrink;
        Decoded {
            image: DynamicImage::ImageRgb8(RgbImage::new(side, side)),
            icc: None,
            shrink,
        }
    }

    fn share() -> Arc<DecodeShare> {
        Arc::new(DecodeShare::default())
    }

    #[test]
    fn a_burst_decodes_once_at_the_largest_size_wanted() {
        let share = share();
        let runs = AtomicU32::new(0);
        // Three members join before any reaches a CPU (as in the edge), with different needs.
        let tickets: Vec<Ticket> = [8, 2, 4]
            .into_iter()
            .map(|s| share.join("photo.jpg".into(), s))
            .collect();
        let start = Barrier::new(3);
        let sides: Vec<u32> = std::thread::scope(|scope| {
            let handles: Vec<_> = tickets
                .iter()
                .map(|t| {
                    let (runs, start) = (&runs, &start);
                    scope.spawn(move || {
                        start.wait();
                        let d = t
                            .decoded(|s| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(50));
                                Ok(fake(s))
                            })
                            .unwrap();
                        d.image.width()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            sides,
            vec![400, 400, 400],
            "decoded at 1/2, the largest wanted"
        );
        assert_eq!(share.decodes.get(), 1);
        assert_eq!(share.reused.get(), 2);
        drop(tickets);
        assert_eq!(share.active(), 0, "the pixels go when the burst is over");
    }

    #[test]
    fn a_later_larger_need_decodes_again_and_sources_do_not_mix() {
        let share = share();
        let small = share.join("a.jpg".into(), 8);
        let d = small.decoded(|s| Ok(fake(s))).unwrap();
        assert_eq!(d.image.width(), 100);
        let large = share.join("a.jpg".into(), 1);
        assert_eq!(large.decoded(|s| Ok(fake(s))).unwrap().image.width(), 800);
        let smaller_again = share.join("a.jpg".into(), 4);
        let reused = smaller_again
            .decoded(|_| panic!("the 1/1 decode is reused"))
            .unwrap();
        assert_eq!(reused.image.width(), 800);
        let other = share.join("b.jpg".into(), 8);
        assert_eq!(other.decoded(|s| Ok(fake(s))).unwrap().image.width(), 100);
        assert_eq!(share.decodes.get(), 3);
    }

    #[test]
    fn errors_reach_the_waiters_and_are_not_kept() {
        let share = share();
        let a = share.join("bad.jpg".into(), 2);
        let err = a.decoded(|_| Err(ImagingError::Undecodable("truncated".into())));
        assert!(err.is_err());
        // The failed decode is not remembered: a retry decodes again.
        assert!(a.decoded(|s| Ok(fake(s))).is_ok());
    }
}
