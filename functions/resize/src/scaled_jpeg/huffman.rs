//! Huffman tables of a baseline JPEG, decoded with a 10-bit lookahead: one table lookup for
//! most codes, and for AC codes whose value bits fit as well, the coefficient itself.

use super::bits::{BitReader, extend};

const LOOKAHEAD: u32 = 10;
const LOOKAHEAD_MASK: u32 = (1 << LOOKAHEAD) - 1;

/// In a lookup entry: the bits to consume (0: the code is longer than the lookahead).
const LENGTH: u32 = 0x1F;
/// In an AC entry: the coefficient's value bits were in the lookahead too, and the entry
/// holds the value itself.
const RESOLVED: u32 = 0x20;

/// What one lookup of an AC table gives.
pub(super) enum Ac {
    /// A coefficient after `run` zeros.
    Coefficient { run: u32, value: i32 },
    /// A symbol whose value bits are still to be read (or end of block, or 16 zeros).
    Symbol(u8),
}

pub(super) struct HuffmanTable {
    /// Per lookahead: `symbol << 8 | RESOLVED? | bits`, and for resolved AC entries the
    /// value in the upper 16 bits.
    lookup: [u32; 1 << LOOKAHEAD],
    /// Largest code of each length (1..=16), -1 when there is none.
    max_code: [i32; 17],
    /// Per length: index into `values` of its first code, less that code.
    offset: [i32; 17],
    values: Vec<u8>,
}

impl HuffmanTable {
    /// Builds a table from the DHT segment's code counts per length and its symbols.
    /// `None` when the counts are impossible (more codes than a length can hold).
    pub(super) fn new(counts: &[u8; 16], values: &[u8], ac: bool) -> Option<Self> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return None;
        }
        let mut lookup = [0u32; 1 << LOOKAHEAD];
        let mut max_code = [-1i32; 17];
        let mut offset = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = counts[len as usize - 1] as usize;
            offset[len as usize] = k as i32 - code as i32;
            for _ in 0..n {
                if code >= 1 << len {
                    return None;
                }
                if len <= LOOKAHEAD {
                    let shift = LOOKAHEAD - len;
                    for fill in 0..(1u32 << shift) {
                        let index = (code << shift) | fill;
                        lookup[index as usize] = entry(index, len, values[k], ac);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Some(Self {
            lookup,
            max_code,
            offset,
            values: values.to_vec(),
        })
    }

    /// The next symbol of a DC table; the reader holds at least 16 bits. A code no table
    /// has gives `None` (corrupt data).
    #[inline]
    pub(super) fn decode(&self, reader: &mut BitReader) -> Option<u8> {
        let entry = self.lookup[(reader.peek(LOOKAHEAD) & LOOKAHEAD_MASK) as usize];
        if entry & LENGTH != 0 {
            reader.consume(entry & LENGTH);
            return Some((entry >> 8) as u8);
        }
        self.decode_long(reader)
    }

    /// The next AC coefficient or symbol, in one lookup for most codes.
    #[inline]
    pub(super) fn decode_ac(&self, reader: &mut BitReader) -> Option<Ac> {
        let entry = self.lookup[(reader.peek(LOOKAHEAD) & LOOKAHEAD_MASK) as usize];
        let bits = entry & LENGTH;
        if bits == 0 {
            return self.decode_long(reader).map(Ac::Symbol);
        }
        reader.consume(bits);
        if entry & RESOLVED != 0 {
            Some(Ac::Coefficient {
                run: entry >> 12 & 15,
                value: entry as i32 >> 16,
            })
        } else {
            Some(Ac::Symbol((entry >> 8) as u8))
        }
    }

    #[cold]
    fn decode_long(&self, reader: &mut BitReader) -> Option<u8> {
        let mut len = LOOKAHEAD + 1;
        let mut code = reader.peek(len) as i32;
        while code > self.max_code[len as usize] {
            len += 1;
            if len > 16 {
                return None;
            }
            code = reader.peek(len) as i32;
        }
        reader.consume(len);
        self.values
            .get((code + self.offset[len as usize]) as usize)
            .copied()
    }
}

/// The lookup entry for lookahead `index` whose first `len` bits are the code of `symbol`.
fn entry(index: u32, len: u32, symbol: u8, ac: bool) -> u32 {
    let plain = u32::from(symbol) << 8 | len;
    let size = u32::from(symbol & 15);
    if !ac || size == 0 || len + size > LOOKAHEAD {
        return plain;
    }
    let raw = ((index << len) & LOOKAHEAD_MASK) >> (LOOKAHEAD - size);
    let value = extend(raw as i32, size);
    (value as u32) << 16 | u32::from(symbol) << 8 | RESOLVED | (len + size)
}

#[cfg(test)]
mod tests {
    use super::{Ac, HuffmanTable};
    use crate::scaled_jpeg::bits::BitReader;

    /// Codes: 00 → 0x01, 01 → 0x02, 100 → 0x11, 10100000000 (11 bits) → 0x03.
    fn table(ac: bool) -> HuffmanTable {
        let mut counts = [0u8; 16];
        counts[1] = 2;
        counts[2] = 1;
        counts[10] = 1;
        HuffmanTable::new(&counts, &[0x01, 0x02, 0x11, 0x03], ac).expect("a valid table")
    }

    #[test]
    fn decodes_short_and_long_codes() {
        // 00 | 01 | 100 | 10100000000 | padding
        let data = [0b0001_1001, 0b0100_0000, 0b0001_1111];
        let mut r = BitReader::new(&data);
        r.refill();
        let t = table(false);
        assert_eq!(t.decode(&mut r), Some(0x01));
        assert_eq!(t.decode(&mut r), Some(0x02));
        assert_eq!(t.decode(&mut r), Some(0x11));
        assert_eq!(t.decode(&mut r), Some(0x03));
    }

    #[test]
    fn gives_a_coefficient_with_its_run_in_one_lookup() {
        // 100 is run 1, size 1; value bit 1 → +1; then 100 + 0 → -1.
        let data = [0b1001_1000, 0];
        let mut r = BitReader::new(&data);
        r.refill();
        let t = table(true);
        for want in [1, -1] {
            match t.decode_ac(&mut r) {
                Some(Ac::Coefficient { run: 1, value }) => assert_eq!(value, want),
                _ => panic!("not resolved in one lookup"),
            }
        }
    }

    #[test]
    fn refuses_impossible_code_counts() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes
        assert!(HuffmanTable::new(&counts, &[1, 2, 3], false).is_none());
        assert!(HuffmanTable::new(&counts, &[1, 2], false).is_none());
    }
}
