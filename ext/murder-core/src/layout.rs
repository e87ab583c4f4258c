//! Where each byte of a torrent lives: the pieces are one stream of bytes
//! laid over the files in order, so a piece may span many small files.

#[derive(Debug, Clone)]
struct Extent {
    offset: u64,
    length: u64,
    pad: bool,
}

/// The byte ranges of the files within the torrent's stream.
#[derive(Debug, Clone)]
pub struct Layout {
    extents: Vec<Extent>,
    total: u64,
    piece_length: u64,
    /// For each piece that ends in padding (BEP 47 pad files), how many
    /// bytes of padding it ends with.
    pad_tails: std::collections::HashMap<usize, u64>,
}

/// A part of one file: `len` bytes at `file_offset` of file `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub file_offset: u64,
    pub len: u64,
    /// Pad-file bytes are zeros and live on no disk.
    pub pad: bool,
}

impl Layout {
    /// `files`: each file's length and whether it is a pad file, in order.
    pub fn new(files: impl IntoIterator<Item = (u64, bool)>, piece_length: u64) -> Self {
        let mut offset = 0;
        let extents = files
            .into_iter()
            .map(|(length, pad)| {
                let e = Extent {
                    offset,
                    length,
                    pad,
                };
                offset += length;
                e
            })
            .collect();
        let mut layout = Layout {
            extents,
            total: offset,
            piece_length,
            pad_tails: Default::default(),
        };
        layout.pad_tails = layout.find_pad_tails();
        layout
    }

    fn find_pad_tails(&self) -> std::collections::HashMap<usize, u64> {
        let mut tails = std::collections::HashMap::new();
        if self.piece_length == 0 {
            return tails;
        }
        for e in self.extents.iter().filter(|e| e.pad && e.length > 0) {
            let first = (e.offset / self.piece_length) as usize;
            let last = ((e.offset + e.length - 1) / self.piece_length) as usize;
            for piece in first..=last {
                if tails.contains_key(&piece) {
                    continue;
                }
                // Padding that ends the piece, with any padding just before it.
                let (start, len) = self.piece_range(piece);
                let mut tail = 0;
                for span in self.spans(start, len) {
                    tail = if span.pad { tail + span.len } else { 0 };
                }
                if tail > 0 {
                    tails.insert(piece, tail);
                }
            }
        }
        tails
    }

    /// Bytes of the pieces that are not trailing padding: what a host
    /// receives and holds (pad files are zeros on no disk and no wire).
    pub fn data_length(&self) -> u64 {
        self.total - self.pad_tails.values().sum::<u64>()
    }

    /// Bytes of `piece` before the padding it ends with (its whole length
    /// when it ends in data).
    pub fn data_end(&self, piece: usize) -> u64 {
        let (_, len) = self.piece_range(piece);
        len - self.pad_tails.get(&piece).copied().unwrap_or(0).min(len)
    }

    pub fn total_length(&self) -> u64 {
        self.total
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    pub fn piece_count(&self) -> usize {
        self.total.div_ceil(self.piece_length) as usize
    }

    /// Offset and length of a piece (the last one may be short).
    pub fn piece_range(&self, piece: usize) -> (u64, u64) {
        let start = piece as u64 * self.piece_length;
        (start, self.piece_length.min(self.total - start))
    }

    /// Whether `data`, the bytes of the stream from `offset`, holds
    /// anything but zeros where pad files lie (BEP 47: pads are zeros).
    pub fn pad_dirty(&self, offset: u64, data: &[u8]) -> bool {
        let mut at = 0usize;
        for span in self.spans(offset, data.len() as u64) {
            let part = &data[at..at + span.len as usize];
            at += span.len as usize;
            if span.pad && part.iter().any(|&b| b != 0) {
                return true;
            }
        }
        false
    }

    /// The file parts that hold `len` bytes from `offset`, in order.
    /// Empty files hold no bytes and never appear.
    pub fn spans(&self, offset: u64, len: u64) -> impl Iterator<Item = Span> + '_ {
        let end = (offset + len).min(self.total);
        // First extent whose end lies beyond `offset`.
        let first = self
            .extents
            .partition_point(|e| e.offset + e.length <= offset);
        self.extents[first..]
            .iter()
            .enumerate()
            .take_while(move |(_, e)| e.offset < end)
            .filter(|(_, e)| e.length > 0)
            .map(move |(i, e)| {
                let from = offset.max(e.offset);
                let to = end.min(e.offset + e.length);
                Span {
                    file: first + i,
                    file_offset: from - e.offset,
                    len: to - from,
                    pad: e.pad,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_spans_files_and_skips_empty_ones() {
        let layout = Layout::new([(5, false), (0, false), (3, false), (10, false)], 8);
        assert_eq!(layout.piece_count(), 3);
        let spans: Vec<_> = layout.spans(0, 8).collect();
        assert_eq!(
            spans,
            vec![
                Span {
                    file: 0,
                    file_offset: 0,
                    len: 5,
                    pad: false
                },
                Span {
                    file: 2,
                    file_offset: 0,
                    len: 3,
                    pad: false
                },
            ]
        );
        assert_eq!(layout.piece_range(2), (16, 2));
        let last: Vec<_> = layout.spans(16, 2).collect();
        assert_eq!(
            last,
            vec![Span {
                file: 3,
                file_offset: 8,
                len: 2,
                pad: false
            }]
        );
        let middle: Vec<_> = layout.spans(4, 6).collect();
        assert_eq!(middle.len(), 3);
        assert_eq!(middle.iter().map(|s| s.len).sum::<u64>(), 6);
    }

    #[test]
    fn pads_that_end_a_piece_are_its_tail_and_pads_hold_zeros() {
        // 5 bytes of data padded to 8, then 10 bytes of data.
        let layout = Layout::new([(5, false), (3, true), (10, false)], 8);
        assert_eq!(layout.data_end(0), 5);
        assert_eq!(layout.data_end(1), 8);
        assert_eq!(layout.data_end(2), 2);
        assert!(!layout.pad_dirty(0, &[1, 1, 1, 1, 1, 0, 0, 0]));
        assert!(layout.pad_dirty(0, &[1, 1, 1, 1, 1, 0, 7, 0]));
        assert!(!layout.pad_dirty(8, &[9; 8]));
    }
}
