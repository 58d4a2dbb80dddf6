//! A lock-free bounded single-producer/single-consumer byte ring in shared memory (a memfd
//! mapped by the parent and the helper), with futex wake-ups on words inside the mapping.
//!
//! Records are `u32 len | u32 reserved | payload`, padded to 8 bytes. A record that does not fit
//! before the end of the buffer is preceded by a wrap marker (`len == u32::MAX`) and starts
//! again at offset 0. `head` (consumer) and `tail` (producer) are byte positions that only grow.
//!
//! The other side may be compromised: every position and length read from the mapping is
//! checked before use, and payloads are copied out before anyone decodes them (the peer can
//! still write while we read). A violation is `Corrupt`, and the caller kills the helper.
//!
//! Cost per record, which is what the throughput of an isolated deployment is made of: each
//! side keeps its own position and the last position it saw of the peer in private memory
//! (`Local`), so a push reads the consumer's `head` line only when the ring looks full and a
//! pop reads the producer's `tail` line only when it looks empty (one cache-line transfer per
//! batch, not per record). A producer that moves a batch can `stage` its records and make them
//! visible with one `publish` (one store to the shared `tail` line per batch instead of one per
//! record: a consumer polling that line would otherwise pull it across cores once per record).
//! Pushing and popping do not wake the peer: the side that wrote calls `notify` (which
//! publishes) / `notify_space` once per batch (a fence and one load; a futex wake only if the
//! peer sleeps), and always before it waits itself.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of one ring's header page.
const HEADER: usize = 4096;
const WRAP: u32 = u32::MAX;

#[repr(C)]
struct Header {
    head: AtomicU64,
    _p0: [u8; 56],
    tail: AtomicU64,
    _p1: [u8; 56],
    /// 1 while the consumer sleeps (futex word).
    consumer_sleeping: AtomicU32,
    _p2: [u8; 60],
    /// 1 while the producer waits for space (futex word).
    producer_sleeping: AtomicU32,
    _p3: [u8; 60],
    /// Set by the parent when it closes the channel.
    closed: AtomicU32,
}

/// The peer broke the ring's invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub String);

/// One side's private view of a ring's positions: never in the shared mapping, so the peer
/// cannot move them. The producer uses `tail` / `head_seen`, the consumer `head` / `tail_seen`
/// (atomics only because one `Shm` may serve both ends in tests; all accesses are relaxed).
#[derive(Default)]
struct Local {
    tail: AtomicU64,
    head_seen: AtomicU64,
    head: AtomicU64,
    tail_seen: AtomicU64,
}

/// A shared mapping holding two rings: parent→helper requests and helper→parent completions.
pub struct Shm {
    base: NonNull<u8>,
    len: usize,
    capacity: usize,
    local: [Local; 2],
}

// SAFETY: the mapping is only accessed through atomics and bounds-checked copies.
unsafe impl Send for Shm {}
unsafe impl Sync for Shm {}

impl Shm {
    /// Bytes of the mapping for two rings of `capacity` each.
    pub fn size_for(capacity: usize) -> usize {
        2 * (HEADER + capacity)
    }

    /// Parent side: a new memfd of the right size, mapped. Returns the fd to hand to the helper.
    pub fn create(capacity: usize) -> io::Result<(Shm, OwnedFd)> {
        assert!(capacity.is_power_of_two() && capacity >= 4096);
        let fd = unsafe { libc::memfd_create(c"sluice-ring".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = Shm::size_for(capacity);
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The helper must not be able to shrink it under us (SIGBUS in the parent).
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL);
        }
        let shm = Shm::map(fd.as_fd_borrowed(), capacity)?;
        Ok((shm, fd))
    }

    /// Maps `fd` (helper side: the memfd inherited from the parent).
    pub fn map(fd: BorrowedFd<'_>, capacity: usize) -> io::Result<Shm> {
        let len = Shm::size_for(capacity);
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shm { base: NonNull::new(p.cast()).unwrap(), len, capacity, local: Default::default() })
    }

    fn ring(&self, index: usize) -> Ring<'_> {
        let off = index * (HEADER + self.capacity);
        // SAFETY: both rings lie inside the mapping; the header is page-aligned.
        unsafe {
            Ring {
                header: &*(self.base.as_ptr().add(off) as *const Header),
                data: self.base.as_ptr().add(off + HEADER),
                capacity: self.capacity,
                local: &self.local[index],
            }
        }
    }

    /// Parent → helper.
    pub fn requests(&self) -> Ring<'_> {
        self.ring(0)
    }

    /// Helper → parent.
    pub fn completions(&self) -> Ring<'_> {
        self.ring(1)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // Not FUTEX_PRIVATE_FLAG: the word is shared with another process.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts, 0usize, 0u32) };
}

fn futex_wake(word: &AtomicU32) {
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1, 0usize, 0usize, 0u32) };
}

fn padded(len: usize) -> usize {
    8 + ((len + 7) & !7)
}

/// One direction. Exactly one process produces and one consumes.
pub struct Ring<'a> {
    header: &'a Header,
    data: *mut u8,
    capacity: usize,
    local: &'a Local,
}

impl Ring<'_> {
    /// Largest payload a record may carry; bigger ones travel another way (see `transport`).
    pub fn max_record(&self) -> usize {
        self.capacity / 4
    }

    /// Producer: the consumer's `head` from the mapping, checked against what we know: it
    /// only grows, never passes our tail, and stays 8-aligned.
    fn load_head(&self, tail: u64) -> Result<u64, Corrupt> {
        let seen = self.local.head_seen.load(Ordering::Relaxed);
        let head = self.header.head.load(Ordering::Acquire);
        if head < seen || head > tail || head % 8 != 0 {
            return Err(Corrupt(format!("ring head {head} (seen {seen}, tail {tail})")));
        }
        self.local.head_seen.store(head, Ordering::Relaxed);
        Ok(head)
    }

    /// Consumer: the producer's `tail` from the mapping, checked the same way.
    fn load_tail(&self, head: u64) -> Result<u64, Corrupt> {
        let seen = self.local.tail_seen.load(Ordering::Relaxed);
        let tail = self.header.tail.load(Ordering::Acquire);
        if tail < seen || tail < head || tail - head > self.capacity as u64 || tail % 8 != 0 {
            return Err(Corrupt(format!("ring positions head={head} tail={tail} (seen {seen})")));
        }
        self.local.tail_seen.store(tail, Ordering::Relaxed);
        Ok(tail)
    }

    fn write_u32(&self, pos: u64, v: u32) {
        let off = (pos as usize) & (self.capacity - 1);
        unsafe { std::ptr::write_volatile(self.data.add(off) as *mut u32, v) };
    }

    fn read_u32(&self, pos: u64) -> u32 {
        let off = (pos as usize) & (self.capacity - 1);
        unsafe { std::ptr::read_volatile(self.data.add(off) as *const u32) }
    }

    /// Producer: appends a record of `len` bytes written by `fill` and publishes it.
    /// `Ok(false)` when full. Does not wake the consumer: call `notify` after the batch.
    pub fn try_push(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<bool, Corrupt> {
        let pushed = self.stage(len, fill)?;
        if pushed {
            self.publish();
        }
        Ok(pushed)
    }

    /// Producer: writes a record of `len` bytes like `try_push` but leaves it invisible to the
    /// consumer until `publish` (or `notify`, `wait_space`). `Ok(false)` when full.
    pub fn stage(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<bool, Corrupt> {
        assert!(len <= self.max_record());
        let tail = self.local.tail.load(Ordering::Relaxed);
        let need = padded(len) as u64;
        let to_end = (self.capacity - (tail as usize & (self.capacity - 1))) as u64;
        let (start, skip) = if to_end < need { (tail + to_end, to_end) } else { (tail, 0) };
        let fits = |head: u64| self.capacity as u64 - (tail - head) >= need + skip;
        if !fits(self.local.head_seen.load(Ordering::Relaxed)) && !fits(self.load_head(tail)?) {
            return Ok(false);
        }
        if skip > 0 {
            self.write_u32(tail, WRAP);
        }
        let off = start as usize & (self.capacity - 1);
        // SAFETY: `off + need <= capacity` (no wrap inside a record) and the consumer does not
        // read past `tail`, so these bytes are ours until we publish.
        unsafe {
            let payload = std::slice::from_raw_parts_mut(self.data.add(off + 8), len);
            fill(payload);
        }
        self.write_u32(start, len as u32);
        self.local.tail.store(start + need, Ordering::Relaxed);
        Ok(true)
    }

    /// Producer: makes every staged record visible to the consumer (one release store).
    pub fn publish(&self) {
        self.header.tail.store(self.local.tail.load(Ordering::Relaxed), Ordering::Release);
    }

    /// Producer: publishes, and wakes the consumer if it sleeps. Once after a batch of pushes,
    /// and before the producer waits for anything (no lost wake-up: the consumer raises its
    /// flag before its last emptiness check, we publish `tail` before looking at the flag).
    pub fn notify(&self) {
        self.publish();
        fence(Ordering::SeqCst);
        if self.header.consumer_sleeping.load(Ordering::Relaxed) != 0 {
            self.header.consumer_sleeping.store(0, Ordering::Relaxed);
            futex_wake(&self.header.consumer_sleeping);
        }
    }

    /// Consumer: copies the next record into `out`. `Ok(false)` when empty. Does not wake a
    /// producer waiting for space: call `notify_space` after the batch.
    pub fn try_pop(&self, out: &mut Vec<u8>) -> Result<bool, Corrupt> {
        let mut head = self.local.head.load(Ordering::Relaxed);
        let mut tail = self.local.tail_seen.load(Ordering::Relaxed);
        if head == tail {
            tail = self.load_tail(head)?;
            if head == tail {
                return Ok(false);
            }
        }
        let mut len = self.read_u32(head);
        if len == WRAP {
            let to_end = (self.capacity - (head as usize & (self.capacity - 1))) as u64;
            head += to_end;
            if head >= tail {
                return Err(Corrupt("wrap marker past the tail".into()));
            }
            len = self.read_u32(head);
        }
        let need = padded(len as usize) as u64;
        let off = head as usize & (self.capacity - 1);
        if len as usize > self.max_record() || head + need > tail || off + need as usize > self.capacity {
            return Err(Corrupt(format!("record of {len} bytes at {head} (tail {tail})")));
        }
        out.clear();
        // SAFETY: bounds checked above; a copy, so the peer's later writes cannot change it.
        unsafe { out.extend_from_slice(std::slice::from_raw_parts(self.data.add(off + 8), len as usize)) };
        self.local.head.store(head + need, Ordering::Relaxed);
        self.header.head.store(head + need, Ordering::Release);
        Ok(true)
    }

    /// Consumer: wakes the producer if it waits for space. Once after a batch of pops.
    pub fn notify_space(&self) {
        fence(Ordering::SeqCst);
        if self.header.producer_sleeping.load(Ordering::Relaxed) != 0 {
            self.header.producer_sleeping.store(0, Ordering::Relaxed);
            futex_wake(&self.header.producer_sleeping);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.header.head.load(Ordering::Acquire) == self.header.tail.load(Ordering::Acquire)
    }

    /// Consumer: sleeps until a record arrives or `timeout` passes (no lost wake-up: the flag is
    /// raised before the last emptiness check). Frees the producer first: it may be waiting
    /// for the space we made.
    pub fn wait_nonempty(&self, timeout: Duration) {
        self.notify_space();
        self.header.consumer_sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.is_empty() && !self.is_closed() {
            futex_wait(&self.header.consumer_sleeping, 1, timeout);
        }
        self.header.consumer_sleeping.store(0, Ordering::Relaxed);
    }

    /// Producer: sleeps until the consumer takes a record or `timeout` passes. Wakes the
    /// consumer first: what we pushed must not wait behind our own sleep.
    pub fn wait_space(&self, timeout: Duration) {
        self.notify();
        let before = self.header.head.load(Ordering::Acquire);
        self.header.producer_sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.header.head.load(Ordering::Acquire) == before {
            futex_wait(&self.header.producer_sleeping, 1, timeout);
        }
        self.header.producer_sleeping.store(0, Ordering::Relaxed);
    }

    pub fn close(&self) {
        self.header.closed.store(1, Ordering::SeqCst);
        futex_wake(&self.header.consumer_sleeping);
    }

    pub fn is_closed(&self) -> bool {
        self.header.closed.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_cross_threads_in_order_through_wraps() {
        let (shm, _fd) = Shm::create(4096).unwrap();
        let shm = std::sync::Arc::new(shm);
        let s2 = shm.clone();
        let len_of = |i: u32| 4 + (i as usize * 7) % 900;
        let producer = std::thread::spawn(move || {
            let r = s2.requests();
            for i in 0..20_000u32 {
                let fill = |b: &mut [u8]| {
                    b[..4].copy_from_slice(&i.to_le_bytes());
                    b[4..].fill(i as u8);
                };
                while !r.try_push(len_of(i), fill).unwrap() {
                    r.wait_space(Duration::from_millis(10));
                }
                if i % 16 == 0 {
                    r.notify();
                }
            }
            r.notify();
        });
        let r = shm.requests();
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            while !r.try_pop(&mut out).unwrap() {
                r.wait_nonempty(Duration::from_millis(10));
            }
            if i % 16 == 0 {
                r.notify_space();
            }
            assert_eq!(out.len(), len_of(i));
            assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()), i);
            assert!(out[4..].iter().all(|b| *b == i as u8));
        }
        producer.join().unwrap();
    }

    #[test]
    fn staged_records_stay_invisible_until_published_and_keep_their_order() {
        let (shm, _fd) = Shm::create(4096).unwrap();
        let r = shm.requests();
        let mut out = Vec::new();
        for i in 0..3u8 {
            assert!(r.stage(5, |b| b.fill(i)).unwrap());
        }
        assert!(!r.try_pop(&mut out).unwrap(), "nothing published yet");
        assert!(r.is_empty());
        r.publish();
        for i in 0..3u8 {
            assert!(r.try_pop(&mut out).unwrap());
            assert_eq!(out, vec![i; 5]);
        }
        assert!(!r.try_pop(&mut out).unwrap());
        // Staging counts against the space like pushing: a full ring refuses either way.
        let mut n = 0;
        while r.stage(1000, |b| b.fill(7)).unwrap() {
            n += 1;
        }
        assert_eq!(n, 4);
        assert!(!r.try_push(1000, |b| b.fill(7)).unwrap());
        r.notify();
        assert!(r.try_pop(&mut out).unwrap());
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn full_ring_refuses_and_frees_after_pop() {
        let (shm, _fd) = Shm::create(4096).unwrap();
        let r = shm.completions();
        let mut n = 0;
        while r.try_push(1000, |b| b.fill(1)).unwrap() {
            n += 1;
        }
        assert_eq!(n, 4);
        let mut out = Vec::new();
        assert!(r.try_pop(&mut out).unwrap());
        assert_eq!(out.len(), 1000);
        assert!(r.try_push(1000, |b| b.fill(2)).unwrap());
    }

    #[test]
    fn corrupt_positions_are_reported_not_followed() {
        let (shm, _fd) = Shm::create(4096).unwrap();
        let r = shm.requests();
        r.header.tail.store(1 << 40, Ordering::SeqCst);
        assert!(r.try_pop(&mut Vec::new()).is_err());
        r.header.tail.store(16, Ordering::SeqCst);
        r.write_u32(0, 4000);
        assert!(r.try_pop(&mut Vec::new()).is_err());
    }

    #[test]
    fn a_peer_moving_its_position_backwards_is_corrupt() {
        let (shm, _fd) = Shm::create(4096).unwrap();
        let r = shm.completions();
        for _ in 0..4 {
            assert!(r.try_push(1000, |b| b.fill(1)).unwrap());
        }
        let mut out = Vec::new();
        assert!(r.try_pop(&mut out).unwrap());
        assert!(r.try_push(1000, |b| b.fill(2)).unwrap(), "fits once the producer sees the new head");
        // The consumer (the peer, for the producer) claims to have read less than it did.
        r.header.head.store(0, Ordering::SeqCst);
        assert!(r.try_push(1000, |b| b.fill(2)).is_err());
        // And a producer that takes back a record the consumer has seen.
        let (shm, _fd) = Shm::create(4096).unwrap();
        let r = shm.requests();
        assert!(r.try_push(8, |b| b.fill(3)).unwrap());
        assert!(r.try_pop(&mut out).unwrap());
        r.header.tail.store(0, Ordering::SeqCst);
        assert!(r.try_pop(&mut out).is_err());
    }
}
