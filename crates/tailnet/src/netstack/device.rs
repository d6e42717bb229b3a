//! The netstack's device: two packet queues that smoltcp reads and writes.

use std::collections::VecDeque;

use bytes::BytesMut;
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium};

use super::{DEVICE_QUEUE, MTU};

/// A device that is two packet queues.
pub(super) struct QueueDevice {
    pub(super) rx: VecDeque<BytesMut>,
    pub(super) tx: VecDeque<BytesMut>,
}

pub(super) struct RxToken(BytesMut);

pub(super) struct TxToken<'a>(&'a mut VecDeque<BytesMut>);

impl smoltcp::phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Room for WireGuard's padding to 16 bytes, so that it needs no new buffer. One
        // allocation per packet: cutting packets from large shared buffers instead took
        // 3 % fewer instructions, yet was about 15 % slower in the NAT lab (a freed
        // buffer comes back hot from the allocator's cache; an arena marches through
        // memory).
        let mut buf = BytesMut::with_capacity(len.next_multiple_of(16));
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        (self.tx.len() < DEVICE_QUEUE).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        // Every inbound packet has passed WireGuard's AEAD, which authenticates every
        // byte: verifying TCP and UDP checksums again only costs (a few percent of the
        // CPU per packet). Outbound checksums are still computed, for any peer that
        // verifies them.
        caps.checksum.tcp = Checksum::Tx;
        caps.checksum.udp = Checksum::Tx;
        caps
    }
}
