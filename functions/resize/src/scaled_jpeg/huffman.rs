//! Huffman tables of a baseline JPEG, decoded with a 10-bit lookahead: one table lookup for
//! most codes, and for AC codes whose value bits fit as well, the coefficient itself. AC
//! tables also have a skip table: for a 12-bit lookahead, how far the whole (symbol, value)
//! pairs it holds move through the block, for the coefficients a reduced transform never
//! reads (most of them at 1/8), which then cost one lookup per two or three instead of one
//! each.

use super::bits::{BitReader, extend};

const LOOKAHEAD: u32 = 10;
const LOOKAHEAD_MASK: u32 = (1 << LOOKAHEAD) - 1;

/// In a lookup entry: the bits to consume (0: the code is longer than the lookahead).
const LENGTH: u32 = 0x1F;
/// In an AC entry: the coefficient's value bits were in the lookahead too, and the entry
/// holds the value itself.
const RESOLVED: u32 = 0x20;

/// The largest DC magnitude category of 8-bit samples.
const MAX_DC_SIZE: u8 = 11;

const SKIP_LOOKAHEAD: u32 = 12;
/// In a skip entry: the bits to consume (0: not even one pair fits in the lookahead)...
const SKIP_BITS: u16 = 0xF;
/// ...whether the last pair was the end of the block...
const SKIP_EOB: u16 = 0x10;
/// ...and, from this bit up, how many zigzag positions the pairs cover (at most 127). In
/// 16 bits, so that the tables of a colour image's two AC tables fit in the L1 cache.
const SKIP_ADVANCE_SHIFT: u16 = 5;

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
    /// AC tables only (a DC table skips nothing): per 12-bit lookahead, `advance << 5 |
    /// EOB? | bits` of the whole pairs in it.
    skip: Option<Box<[u16; 1 << SKIP_LOOKAHEAD]>>,
}

/// Where a skip ended.
pub(super) enum Skipped {
    /// At the end of the block.
    End,
    /// Not resolvable by lookup (a long code, or pairs that would reach the block's end):
    /// the next symbol, at this position, must be decoded on its own.
    Slow(usize),
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
        let mut table = Self {
            lookup,
            max_code,
            offset,
            values: values.to_vec(),
            skip: None,
        };
        if ac {
            let mut skip = Box::new([0u16; 1 << SKIP_LOOKAHEAD]);
            for (window, entry) in skip.iter_mut().enumerate() {
                *entry = table.skip_entry(window as u32);
            }
            table.skip = Some(skip);
        }
        Some(table)
    }

    /// The skip entry of a 12-bit lookahead: the complete (symbol, value bits) pairs at its
    /// start, up to and including an end of block.
    fn skip_entry(&self, window: u32) -> u16 {
        let (mut used, mut advance) = (0u32, 0u32);
        let mut eob = 0;
        while used < SKIP_LOOKAHEAD {
            // The pair at the window's remaining bits, through the one-symbol table (a
            // code longer than its lookahead ends the entry: rare, and left to the slow
            // path).
            let available = SKIP_LOOKAHEAD - used;
            let rest = window & ((1 << available) - 1);
            let index = if available >= LOOKAHEAD {
                rest >> (available - LOOKAHEAD)
            } else {
                rest << (LOOKAHEAD - available)
            };
            let entry = self.lookup[index as usize];
            let symbol = (entry >> 8) as u8;
            let (run, size) = (u32::from(symbol >> 4), u32::from(symbol & 15));
            // A resolved entry's length already counts the value bits.
            let pair = match entry & LENGTH {
                0 => break,
                n if entry & RESOLVED != 0 => n,
                n => n + size,
            };
            if pair > available {
                break;
            }
            used += pair;
            if size == 0 && run != 15 {
                eob = SKIP_EOB;
                break;
            }
            // 16 zeros for ZRL (run 15, size 0), else the run and the coefficient.
            advance += run + 1;
        }
        // A block has 63 AC positions; more (short ZRL codes can give up to 192) can only
        // run past the block, which the cap keeps true and the slow path then judges.
        (advance.min(127) as u16) << SKIP_ADVANCE_SHIFT | eob | used as u16
    }

    /// Moves over the block's remaining coefficients from zigzag position `k` without their
    /// values, two or three pairs per lookup. The reader is refilled here.
    #[inline]
    pub(super) fn skip_ac(&self, reader: &mut BitReader, mut k: usize) -> Skipped {
        let Some(skip) = &self.skip else {
            return Skipped::Slow(k);
        };
        loop {
            if reader.count() < 32 {
                reader.refill();
            }
            let entry = skip[reader.peek(SKIP_LOOKAHEAD) as usize];
            let bits = u32::from(entry & SKIP_BITS);
            let next = k + (entry >> SKIP_ADVANCE_SHIFT) as usize;
            // Pairs that reach the block's last position are left to the slow path: a
            // block ending there has no end-of-block code, and what follows in the
            // lookahead belongs to the next block.
            if bits == 0 || next >= 64 {
                return Skipped::Slow(k);
            }
            reader.consume(bits);
            if entry & SKIP_EOB != 0 {
                return Skipped::End;
            }
            k = next;
        }
    }

    /// The next DC difference (a magnitude category and its value bits), in one lookup
    /// when both fit in the lookahead; the reader holds at least 27 bits. A code no table
    /// has, or a category past 11, gives `None` (corrupt data).
    #[inline]
    pub(super) fn decode_dc(&self, reader: &mut BitReader) -> Option<i32> {
        let entry = self.lookup[(reader.peek(LOOKAHEAD) & LOOKAHEAD_MASK) as usize];
        let bits = entry & LENGTH;
        if entry & RESOLVED != 0 {
            reader.consume(bits);
            return Some(entry as i32 >> 16);
        }
        let size = if bits != 0 {
            reader.consume(bits);
            (entry >> 8) as u8
        } else {
            self.decode_long(reader)?
        };
        if size > MAX_DC_SIZE {
            return None;
        }
        Some(reader.receive_extend(u32::from(size)))
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
/// Resolved entries hold the value too: AC coefficients (not end of block or ZRL, whose
/// size is 0) and DC differences (whose symbol is the size; 0 is a difference of 0).
fn entry(index: u32, len: u32, symbol: u8, ac: bool) -> u32 {
    let plain = u32::from(symbol) << 8 | len;
    let (resolvable, size) = if ac {
        (symbol & 15 != 0, u32::from(symbol & 15))
    } else {
        (symbol <= MAX_DC_SIZE, u32::from(symbol))
    };
    if !resolvable || len + size > LOOKAHEAD {
        return plain;
    }
    let raw = ((index << len) & LOOKAHEAD_MASK) >> (LOOKAHEAD - size);
    let value = if size == 0 {
        0
    } else {
        extend(raw as i32, size)
    };
    (value as u32) << 16 | u32::from(symbol) << 8 | RESOLVED | (len + size)
}

#[cfg(test)]
mod tests {
    use super::{Ac, HuffmanTable, Skipped};
    use crate::scaled_jpeg::bits::BitReader;

    /// Codes: 00 → 0x01, 01 → 0x02, 100 → 0x11, 10100000000 (11 bits) → 0x03.
    fn table(ac: bool) -> HuffmanTable {
        let mut counts = [0u8; 16];
        counts[1] = 2;
        counts[2] = 1;
        counts[10] = 1;
        HuffmanTable::new(&counts, &[0x01, 0x02, 0x11, 0x03], ac).expect("a valid table")
    }

    /// A DC table: 00 → 0, 01 → 1, 100 → 9, 10100000000 (11 bits) → 3.
    fn dc_table() -> HuffmanTable {
        let mut counts = [0u8; 16];
        counts[1] = 2;
        counts[2] = 1;
        counts[10] = 1;
        HuffmanTable::new(&counts, &[0, 1, 9, 3], false).expect("a valid table")
    }

    /// Bits written as text, padded with ones, 0xFF bytes stuffed.
    fn bits(text: &str) -> Vec<u8> {
        let mut padded: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        while !padded.len().is_multiple_of(8) {
            padded.push('1');
        }
        let bytes = (0..padded.len())
            .step_by(8)
            .map(|i| u8::from_str_radix(&padded[i..i + 8], 2).expect("binary digits"));
        bytes
            .flat_map(|b| if b == 0xFF { vec![b, 0] } else { vec![b] })
            .collect()
    }

    #[test]
    fn decodes_dc_differences_in_one_lookup_or_through_the_long_paths() {
        // 0 (size 0); +1 (01 | 1); -510 (100 | 000000001: code and value past the
        // lookahead); -4 (an 11-bit code, then 011).
        let data = bits("00  01 1  100 000000001  10100000000 011");
        let mut r = BitReader::new(&data);
        r.refill();
        let t = dc_table();
        for want in [0, 1, -510, -4] {
            assert_eq!(t.decode_dc(&mut r), Some(want));
            r.refill();
        }
    }

    #[test]
    fn refuses_dc_categories_past_eleven() {
        let mut counts = [0u8; 16];
        counts[0] = 2;
        let t = HuffmanTable::new(&counts, &[0, 12], false).expect("a valid table");
        let data = bits("1 000000000000");
        let mut r = BitReader::new(&data);
        r.refill();
        assert_eq!(t.decode_dc(&mut r), None);
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

    /// An AC table: 00 → EOB, 01 → (run 0, size 1), 10 → (run 1, size 1), 1100 → ZRL,
    /// 11010000000 (11 bits) → (run 0, size 2).
    fn ac_table() -> HuffmanTable {
        let mut counts = [0u8; 16];
        counts[1] = 3;
        counts[3] = 1;
        counts[10] = 1;
        HuffmanTable::new(&counts, &[0x00, 0x01, 0x11, 0xF0, 0x02], true).expect("a valid table")
    }

    #[test]
    fn skips_several_pairs_in_one_lookup_up_to_the_end_of_block() {
        // 01 1 | 10 0 | 1100 | 00, then 1011 to show where the reader stopped.
        let data = [0b0111_0011, 0b0000_1011, 0];
        let mut r = BitReader::new(&data);
        r.refill();
        assert!(matches!(ac_table().skip_ac(&mut r, 1), Skipped::End));
        assert_eq!(r.peek(4), 0b1011);
    }

    #[test]
    fn a_skip_stops_before_a_long_code_or_a_run_past_the_block() {
        // 01 1 | 01 0 | 11010000000 (a code longer than the lookahead) | 00
        let data = [0b0110_1011, 0b0100_0000, 0b0000_0000];
        let mut r = BitReader::new(&data);
        r.refill();
        let t = ac_table();
        assert!(matches!(t.skip_ac(&mut r, 5), Skipped::Slow(7)));
        assert_eq!(r.peek(11), 0b110_1000_0000);
        // At position 63, a run of one would land past the block: left to the slow path,
        // which calls it corrupt, and nothing is consumed.
        let data = [0b1000_0000, 0];
        let mut r = BitReader::new(&data);
        r.refill();
        assert!(matches!(t.skip_ac(&mut r, 63), Skipped::Slow(63)));
        assert_eq!(r.peek(3), 0b100);
        // A coefficient at 63 ends the block without an EOB, so the 00 after it is the next
        // block's: left to the slow path too.
        let data = [0b0110_0000, 0];
        let mut r = BitReader::new(&data);
        r.refill();
        assert!(matches!(t.skip_ac(&mut r, 63), Skipped::Slow(63)));
        assert_eq!(r.peek(5), 0b01100);
    }

    #[test]
    fn refuses_impossible_code_counts() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes
        assert!(HuffmanTable::new(&counts, &[1, 2, 3], false).is_none());
        assert!(HuffmanTable::new(&counts, &[1, 2], false).is_none());
    }
}
