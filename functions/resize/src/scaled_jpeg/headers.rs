//! The markers before the first scan: quantization and Huffman tables, the frame, the
//! restart interval and the scan header. Anything this decoder does not handle (other
//! processes than baseline/extended Huffman, 12-bit samples, four components, several
//! scans) makes `parse` answer `None`, and the caller uses the general decoder.

use super::huffman::HuffmanTable;

pub(super) struct Component {
    pub id: u8,
    pub h: usize,
    pub v: usize,
    pub quant: usize,
    pub dc: usize,
    pub ac: usize,
}

pub(super) struct Headers<'a> {
    pub width: usize,
    pub height: usize,
    pub components: Vec<Component>,
    /// Zigzag order, as stored.
    pub quant: [Option<[u16; 64]>; 4],
    pub dc: [Option<HuffmanTable>; 4],
    pub ac: [Option<HuffmanTable>; 4],
    pub restart_interval: usize,
    /// An Adobe APP14 segment's colour transform (0: the three components are RGB).
    pub adobe_transform: Option<u8>,
    /// The entropy-coded data of the first scan, to the end of the file.
    pub scan: &'a [u8],
}

fn be16(data: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]) as usize)
}

pub(super) fn parse(data: &[u8]) -> Option<Headers<'_>> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut headers = Headers {
        width: 0,
        height: 0,
        components: Vec::new(),
        quant: [None; 4],
        dc: [None, None, None, None],
        ac: [None, None, None, None],
        restart_interval: 0,
        adobe_transform: None,
        scan: &[],
    };
    let mut pos = 2;
    let mut frame_seen = false;
    loop {
        // Markers may be preceded by fill bytes.
        while *data.get(pos)? != 0xFF {
            pos += 1;
        }
        while *data.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = *data.get(pos)?;
        pos += 1;
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue;
        }
        let len = be16(data, pos)?;
        let segment = data.get(pos + 2..pos + len.max(2))?;
        match marker {
            // Baseline and extended sequential, Huffman-coded.
            0xC0 | 0xC1 => {
                if frame_seen {
                    return None;
                }
                frame_seen = true;
                parse_frame(segment, &mut headers)?;
            }
            // Every other frame type: progressive, lossless, arithmetic coding.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xC4 => parse_huffman(segment, &mut headers)?,
            0xDB => parse_quant(segment, &mut headers)?,
            0xDD => headers.restart_interval = be16(segment, 0)?,
            0xEE if segment.starts_with(b"Adobe") => {
                headers.adobe_transform = segment.get(11).copied();
            }
            0xDA => {
                if !frame_seen || !scan_covers_frame(segment, &mut headers)? {
                    return None;
                }
                headers.scan = data.get(pos + len..)?;
                return Some(headers);
            }
            0xD9 => return None,
            _ => {}
        }
        pos += len;
    }
}

fn parse_frame(s: &[u8], h: &mut Headers) -> Option<()> {
    if *s.first()? != 8 {
        return None;
    }
    h.height = be16(s, 1)?;
    h.width = be16(s, 3)?;
    let n = *s.get(5)? as usize;
    if h.width == 0 || h.height == 0 || !(n == 1 || n == 3) {
        return None;
    }
    for i in 0..n {
        let c = s.get(6 + i * 3..9 + i * 3)?;
        let (hs, vs) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
        if !(1..=4).contains(&hs) || !(1..=4).contains(&vs) || c[2] > 3 {
            return None;
        }
        h.components.push(Component {
            id: c[0],
            h: hs,
            v: vs,
            quant: c[2] as usize,
            dc: 0,
            ac: 0,
        });
    }
    Some(())
}

fn parse_huffman(mut s: &[u8], h: &mut Headers) -> Option<()> {
    while !s.is_empty() {
        let class_id = s[0];
        let counts: [u8; 16] = s.get(1..17)?.try_into().ok()?;
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let values = s.get(17..17 + total)?;
        let table = HuffmanTable::new(&counts, values, class_id >> 4 == 1)?;
        let id = (class_id & 15) as usize;
        match (class_id >> 4, id) {
            (0, 0..=3) => h.dc[id] = Some(table),
            (1, 0..=3) => h.ac[id] = Some(table),
            _ => return None,
        }
        s = &s[17 + total..];
    }
    Some(())
}

fn parse_quant(mut s: &[u8], h: &mut Headers) -> Option<()> {
    while !s.is_empty() {
        let precision = s[0] >> 4;
        let id = (s[0] & 15) as usize;
        if id > 3 {
            return None;
        }
        let mut table = [0u16; 64];
        if precision == 0 {
            for (t, &b) in table.iter_mut().zip(s.get(1..65)?) {
                *t = u16::from(b);
            }
            s = &s[65..];
        } else {
            for (i, t) in table.iter_mut().enumerate() {
                *t = be16(s, 1 + 2 * i)? as u16;
            }
            s = s.get(129..)?;
        }
        h.quant[id] = Some(table);
    }
    Some(())
}

/// Reads the scan header; `Some(false)` when the scan does not hold every component of the
/// frame in frame order with full spectral range (a multi-scan file).
fn scan_covers_frame(s: &[u8], h: &mut Headers) -> Option<bool> {
    let n = *s.first()? as usize;
    if n != h.components.len() {
        return Some(false);
    }
    for i in 0..n {
        let (id, tables) = (*s.get(1 + i * 2)?, *s.get(2 + i * 2)?);
        let c = &mut h.components[i];
        if c.id != id {
            return Some(false);
        }
        c.dc = (tables >> 4) as usize;
        c.ac = (tables & 15) as usize;
        if c.dc > 3 || c.ac > 3 {
            return Some(false);
        }
    }
    let spectral = s.get(1 + n * 2..4 + n * 2)?;
    Some(spectral[0] == 0 && spectral[1] == 63 && spectral[2] == 0)
}
