//! The segments a flow keeps for resending, in sequence order. Deques rather than
//! B-trees: new segments arrive in order at the back and acknowledged ones leave at the
//! front, and a SACK mostly takes segments near the front of the unSACKed ones, so
//! every common step is O(1) or a binary search in contiguous memory. The B-trees this
//! replaced cost about 8 % of a sending thread in the NAT lab's profile.

use std::collections::VecDeque;
use std::time::Instant;

/// A data segment sent and not yet cumulatively acknowledged.
#[derive(Debug)]
pub(super) struct Seg {
    /// Position just past its last byte.
    pub end: u64,
    /// When it was last sent.
    pub xmit: Instant,
    pub retransmitted: bool,
    /// The IP packet as sent, to send again.
    pub packet: Vec<u8>,
}

#[derive(Debug)]
struct Slot {
    start: u64,
    sacked: bool,
    seg: Seg,
}

/// Segments by start position, none overlapping, with the unSACKed ones indexed.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    slots: VecDeque<Slot>,
    /// Starts of the slots not SACKed, ascending.
    unsacked: VecDeque<u64>,
    /// Bytes of the SACKed slots.
    sacked_bytes: u64,
}

impl InFlight {
    /// Whether no segment is kept.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether some kept segment is not SACKed.
    pub fn has_unsacked(&self) -> bool {
        !self.unsacked.is_empty()
    }

    /// Bytes of the kept segments that are SACKed.
    pub fn sacked_bytes(&self) -> u64 {
        self.sacked_bytes
    }

    /// Start of the highest segment not SACKed.
    pub fn last_unsacked(&self) -> Option<u64> {
        self.unsacked.back().copied()
    }

    /// Start of the lowest segment kept.
    pub fn first_start(&self) -> Option<u64> {
        self.slots.front().map(|s| s.start)
    }

    /// Starts of the segments not SACKed, ascending.
    pub fn unsacked(&self) -> impl Iterator<Item = u64> + '_ {
        self.unsacked.iter().copied()
    }

    fn index(&self, start: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&start, |s| s.start).ok()
    }

    /// The segment starting at `start`.
    pub fn get(&self, start: u64) -> Option<&Seg> {
        self.index(start).map(|i| &self.slots[i].seg)
    }

    /// The segment starting at `start`, to change.
    pub fn get_mut(&mut self, start: u64) -> Option<&mut Seg> {
        let i = self.index(start)?;
        Some(&mut self.slots[i].seg)
    }

    /// Whether a segment starts at `start`.
    pub fn contains(&self, start: u64) -> bool {
        self.index(start).is_some()
    }

    /// Start of the lowest segment starting in `from..to`.
    pub fn first_start_in(&self, from: u64, to: u64) -> Option<u64> {
        let i = self.slots.partition_point(|s| s.start < from);
        self.slots.get(i).map(|s| s.start).filter(|&s| s < to)
    }

    /// Start of the lowest unSACKed segment starting in `from..to`.
    pub fn first_unsacked_in(&self, from: u64, to: u64) -> Option<u64> {
        let i = self.unsacked.partition_point(|&s| s < from);
        self.unsacked.get(i).copied().filter(|&s| s < to)
    }

    /// Keeps `seg`, unSACKed, at `start`, where no segment starts (remove any first).
    pub fn insert(&mut self, start: u64, seg: Seg) {
        let slot = Slot {
            start,
            sacked: false,
            seg,
        };
        if self.slots.back().is_none_or(|s| s.start < start) {
            self.slots.push_back(slot);
        } else {
            let i = self.slots.partition_point(|s| s.start < start);
            debug_assert!(self.slots.get(i).is_none_or(|s| s.start != start));
            self.slots.insert(i, slot);
        }
        if self.unsacked.back().is_none_or(|&s| s < start) {
            self.unsacked.push_back(start);
        } else {
            let i = self.unsacked.partition_point(|&s| s < start);
            self.unsacked.insert(i, start);
        }
    }

    /// A slot left: it no longer counts as SACKed or as unSACKed.
    fn forget(&mut self, slot: &Slot) {
        if slot.sacked {
            self.sacked_bytes -= slot.seg.end - slot.start;
        } else {
            self.forget_unsacked(slot.start);
        }
    }

    fn forget_unsacked(&mut self, start: u64) {
        if self.unsacked.front() == Some(&start) {
            self.unsacked.pop_front();
        } else if let Ok(i) = self.unsacked.binary_search(&start) {
            self.unsacked.remove(i);
        }
    }

    /// Takes out the segment at `start`, with whether it was SACKed.
    pub fn remove(&mut self, start: u64) -> Option<(Seg, bool)> {
        let i = self.index(start)?;
        let slot = self.slots.remove(i)?;
        self.forget(&slot);
        Some((slot.seg, slot.sacked))
    }

    /// Takes out the lowest segment if it ends at or before `ack`: its start, the
    /// segment, and whether it was SACKed.
    pub fn pop_acked(&mut self, ack: u64) -> Option<(u64, Seg, bool)> {
        if self.slots.front()?.seg.end > ack {
            return None;
        }
        let slot = self.slots.pop_front()?;
        self.forget(&slot);
        Some((slot.start, slot.seg, slot.sacked))
    }

    /// Marks the segment at `start` SACKed; false if there is none or it already was.
    pub fn mark_sacked(&mut self, start: u64) -> bool {
        let Some(i) = self.index(start) else {
            return false;
        };
        let slot = &mut self.slots[i];
        if std::mem::replace(&mut slot.sacked, true) {
            return false;
        }
        self.sacked_bytes += slot.seg.end - start;
        self.forget_unsacked(start);
        true
    }

    /// Takes out every segment.
    pub fn drain(&mut self) -> impl Iterator<Item = Seg> + '_ {
        self.unsacked.clear();
        self.sacked_bytes = 0;
        self.slots.drain(..).map(|s| s.seg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn seg(end: u64, now: Instant) -> Seg {
        Seg {
            end,
            xmit: now,
            retransmitted: false,
            packet: Vec::new(),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
        PopAcked(u8),
        Sack(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Insert),
            1 => any::<u8>().prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::PopAcked),
            2 => any::<u8>().prop_map(Op::Sack),
        ]
    }

    proptest! {
        /// Every operation gives what a B-tree map of segments and a B-tree set of
        /// unSACKed starts (the structures this replaced) give.
        #[test]
        fn behaves_like_the_b_trees(ops in proptest::collection::vec(op(), 1..200)) {
            #[allow(clippy::disallowed_methods)] // a timestamp the segments carry, never compared
            let now = Instant::now();
            let mut f = InFlight::default();
            let mut segs: BTreeMap<u64, u64> = BTreeMap::new();
            let mut unsacked: BTreeSet<u64> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(p) => {
                        let start = u64::from(p) * 10;
                        if let std::collections::btree_map::Entry::Vacant(e) = segs.entry(start) {
                            f.insert(start, seg(start + 10, now));
                            e.insert(start + 10);
                            unsacked.insert(start);
                        }
                    }
                    Op::Remove(p) => {
                        let start = u64::from(p) * 10;
                        let got = f.remove(start).map(|(s, sacked)| (s.end, sacked));
                        let want = segs.remove(&start).map(|e| (e, !unsacked.remove(&start)));
                        prop_assert_eq!(got, want);
                    }
                    Op::PopAcked(p) => {
                        let ack = u64::from(p) * 10;
                        let got = f.pop_acked(ack).map(|(s, g, sacked)| (s, g.end, sacked));
                        let want = match segs.first_key_value() {
                            Some((&s, &e)) if e <= ack => {
                                segs.remove(&s);
                                Some((s, e, !unsacked.remove(&s)))
                            }
                            _ => None,
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::Sack(p) => {
                        let start = u64::from(p) * 10;
                        prop_assert_eq!(f.mark_sacked(start), unsacked.remove(&start));
                    }
                }
                prop_assert_eq!(f.is_empty(), segs.is_empty());
                prop_assert_eq!(f.first_start(), segs.keys().next().copied());
                prop_assert_eq!(f.last_unsacked(), unsacked.last().copied());
                let sacked: u64 = segs
                    .iter()
                    .filter(|(s, _)| !unsacked.contains(s))
                    .map(|(s, e)| e - s)
                    .sum();
                prop_assert_eq!(f.sacked_bytes(), sacked);
                prop_assert_eq!(f.unsacked().collect::<Vec<_>>(), unsacked.iter().copied().collect::<Vec<_>>());
                for (from, to) in [(0, 5), (15, 600), (300, 2560), (1000, 1001)] {
                    prop_assert_eq!(f.first_start_in(from, to), segs.range(from..to).next().map(|(&s, _)| s));
                    prop_assert_eq!(f.first_unsacked_in(from, to), unsacked.range(from..to).next().copied());
                }
                for (&s, &e) in &segs {
                    prop_assert_eq!(f.get(s).map(|g| g.end), Some(e));
                }
            }
            let drained: Vec<u64> = f.drain().map(|s| s.end).collect();
            prop_assert_eq!(drained, segs.values().copied().collect::<Vec<_>>());
            prop_assert!(f.is_empty() && !f.has_unsacked());
        }
    }
}
