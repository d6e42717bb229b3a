//! Packet buffers cut from large allocations. `BytesMut::split_to` hands out a piece of
//! one shared buffer for the price of a reference count, and `reserve` takes the whole
//! buffer back once every piece cut from it is gone; so one allocation serves a few
//! hundred packets. (An allocation and a free per packet, each way, were several percent
//! of the CPU per packet in `benches/dataplane.rs`.)

use bytes::BytesMut;

/// Bytes allocated at a time.
const ARENA_BYTES: usize = 256 << 10;

/// A source of packet buffers.
#[derive(Debug, Default)]
pub(crate) struct Arena(BytesMut);

impl Arena {
    fn room(&mut self, cap: usize) {
        if self.0.capacity() < cap {
            self.0.reserve(ARENA_BYTES.max(cap));
        }
    }

    /// `len` zero bytes, with room to grow to `cap` without a new allocation.
    pub fn zeroed(&mut self, len: usize, cap: usize) -> BytesMut {
        let cap = cap.max(len);
        self.room(cap);
        self.0.resize(cap, 0);
        let mut b = self.0.split_to(cap);
        b.truncate(len);
        b
    }

    /// A copy of `data`.
    pub fn copy(&mut self, data: &[u8]) -> BytesMut {
        self.room(data.len());
        self.0.extend_from_slice(data);
        self.0.split()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_independent_and_the_buffer_is_reused() {
        let mut a = Arena::default();
        let mut x = a.zeroed(5, 16);
        let y = a.copy(b"hello");
        x.copy_from_slice(b"world");
        // Growing within the room asked for stays in place and leaves `y` alone.
        let before = x.as_ptr();
        x.resize(16, 7);
        assert_eq!(x.as_ptr(), before);
        assert_eq!(&x[..5], b"world");
        assert_eq!(&y[..], b"hello");
        let first = x.as_ptr();
        drop((x, y));
        // Everything cut so far is gone: the next pieces come from the same buffer.
        let mut seen_again = false;
        for _ in 0..(ARENA_BYTES / 1280 + 2) {
            let p = a.zeroed(1280, 1280);
            assert!(p.iter().all(|&b| b == 0));
            seen_again |= p.as_ptr() == first;
        }
        assert!(seen_again, "the arena's buffer was not reused");
    }
}
