//! The entropy-coded data of a scan, read most significant bit first through a 64-bit
//! buffer. Stuffed zero bytes are dropped while filling; at a marker (or the end of the
//! data) zero bits are fed instead, and how many of those were actually used tells a
//! truncated scan from a complete one.

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Valid bits, left-aligned.
    bits: u64,
    count: u32,
    /// Zero bytes fed after the data ran out or reached a marker.
    padded: u32,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            bits: 0,
            count: 0,
            padded: 0,
        }
    }

    /// Tops the buffer up to at least 57 bits.
    #[inline(always)]
    pub(super) fn refill(&mut self) {
        if self.count > 56 {
            return;
        }
        // Eight bytes at once when none of them is 0xFF (no stuffing, no marker): the
        // common case in photographs.
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let w = u64::from_be_bytes(word.try_into().expect("eight bytes"));
            let inverted = !w;
            let has_ff = inverted.wrapping_sub(0x0101_0101_0101_0101) & w & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                let n = (64 - self.count) / 8;
                self.bits |= (w >> (64 - 8 * n)) << (64 - self.count - 8 * n);
                self.pos += n as usize;
                self.count += 8 * n;
                return;
            }
        }
        while self.count <= 56 {
            let byte = match self.data.get(self.pos) {
                Some(0xFF) => match self.data.get(self.pos + 1) {
                    Some(0x00) => {
                        self.pos += 2;
                        0xFF
                    }
                    // A fill byte before a marker.
                    Some(0xFF) => {
                        self.pos += 1;
                        continue;
                    }
                    _ => {
                        self.padded += 1;
                        0
                    }
                },
                Some(&b) => {
                    self.pos += 1;
                    b
                }
                None => {
                    self.padded += 1;
                    0
                }
            };
            self.bits |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// The next `n` bits (1..=32) without consuming them; the caller has refilled.
    #[inline]
    pub(super) fn peek(&self, n: u32) -> u32 {
        (self.bits >> (64 - n)) as u32
    }

    #[inline]
    pub(super) fn consume(&mut self, n: u32) {
        // Callers refill to 32 bits before a symbol and a symbol uses at most 31.
        self.bits <<= n & 63;
        self.count = self.count.saturating_sub(n);
    }

    #[inline]
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Reads `s` (0..=16) bits as a JPEG magnitude category value (sign-extended).
    #[inline]
    pub(super) fn receive_extend(&mut self, s: u32) -> i32 {
        // Without a branch on `s == 0` (a DC difference of zero is common and comes
        // unpredictably): the top `s` bits, none when `s` is 0...
        let v = ((self.bits >> 1) >> (63 - s)) as i32;
        self.consume(s);
        // ...and `extend` as arithmetic: a leading 0 bit subtracts 2^s - 1 (for `s` 0 the
        // mask is 0).
        let negative = v.wrapping_sub(1i32.wrapping_shl(s.wrapping_sub(1))) >> 31;
        v + (negative & ((-1i32 << s) + 1))
    }

    /// Whether bits past the end of the data were used: the scan was cut short.
    pub(super) fn overran(&self) -> bool {
        self.padded * 8 > self.count
    }

    /// At a restart interval's end: drops the buffered bits and steps over the `RSTn`
    /// marker expected next. `false` when it is not there.
    pub(super) fn restart(&mut self, expected: u8) -> bool {
        if self.overran() {
            return false;
        }
        self.bits = 0;
        self.count = 0;
        self.padded = 0;
        while self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        if self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&expected)
        {
            self.pos += 2;
            true
        } else {
            false
        }
    }
}

/// JPEG's magnitude categories: the `size` raw bits `v` of a value, sign-extended (a
/// leading 0 bit means negative).
#[inline]
pub(super) fn extend(v: i32, size: u32) -> i32 {
    if v < 1 << (size - 1) {
        v - (1 << size) + 1
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::BitReader;

    #[test]
    fn reads_bits_in_order_dropping_stuffed_zeros() {
        let data = [0b1010_0000, 0xFF, 0x00, 0x0F, 0x12];
        let mut r = BitReader::new(&data);
        r.refill();
        assert_eq!(r.peek(3), 0b101);
        r.consume(8);
        assert_eq!(r.peek(8), 0xFF);
        r.consume(8);
        assert_eq!(r.peek(16), 0x0F12);
        r.consume(16);
        assert!(!r.overran());
        r.consume(8);
        assert!(r.overran(), "a byte past the end was used");
    }

    #[test]
    fn stops_at_a_marker_and_steps_over_the_restart() {
        let data = [0xAB, 0xFF, 0xD0, 0xCD, 0xEF, 0x01, 0x02, 0x03, 0x04, 0x05];
        let mut r = BitReader::new(&data);
        r.refill();
        assert_eq!(r.peek(8), 0xAB);
        r.consume(8);
        assert_eq!(r.peek(8), 0, "zeros after the marker");
        assert!(r.restart(0xD0));
        r.refill();
        assert_eq!(r.peek(16), 0xCDEF);
        let mut wrong = BitReader::new(&data);
        wrong.refill();
        wrong.consume(8);
        assert!(!wrong.restart(0xD1), "RST0 is not RST1");
    }

    #[test]
    fn extends_magnitude_categories_to_signed_values() {
        // Category 3: 000..011 are -7..-4, 100..111 are 4..7.
        for (bits, value) in [(0b000u8, -7), (0b011, -4), (0b100, 4), (0b111, 7)] {
            let data = [bits << 5];
            let mut r = BitReader::new(&data);
            r.refill();
            assert_eq!(r.receive_extend(3), value);
            assert_eq!(
                r.receive_extend(0),
                0,
                "category 0 is zero and reads nothing"
            );
            assert_eq!(r.peek(5), 0);
        }
        // Every category against the reference formula, at both ends of its range.
        for size in 1..=16u32 {
            for raw in [
                0u32,
                (1 << (size - 1)) - 1,
                1 << (size - 1),
                (1 << size) - 1,
            ] {
                // With the stuffed zero byte the data has after each 0xFF.
                let data: Vec<u8> = (raw << (32 - size))
                    .to_be_bytes()
                    .iter()
                    .flat_map(|&b| if b == 0xFF { vec![b, 0] } else { vec![b] })
                    .collect();
                let mut r = BitReader::new(&data);
                r.refill();
                assert_eq!(
                    r.receive_extend(size),
                    super::extend(raw as i32, size),
                    "{size}: {raw:b}"
                );
            }
        }
    }
}
