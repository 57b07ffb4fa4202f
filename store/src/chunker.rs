//! Content-defined chunking over a stream, with a reusable buffer.
//!
//! FastCDC decides a cut from at most `max_size` bytes after the chunk's start, so as long as the
//! buffer holds `max_size` bytes past the start (or the stream has ended) the boundaries are the
//! same whatever the buffer size is and however the reads were split. The property test below
//! holds us to that.

use std::io::{self, Read};

use fastcdc::v2020::FastCDC;

use crate::config::ChunkerParams;

/// Cuts a byte stream into chunks, calling `sink(chunk)` for each in order.
pub struct Chunker {
    params: ChunkerParams,
    buf: Vec<u8>,
}

impl Chunker {
    /// A chunker whose buffer is `buf_size` bytes (raised to twice `max_size` if smaller).
    #[must_use]
    pub fn new(params: ChunkerParams, buf_size: usize) -> Self {
        let size = buf_size.max(2 * params.max_size as usize);
        Self { params, buf: vec![0; size] }
    }

    /// Reads `reader` to its end (or to `limit` bytes). After each buffer fill, `sink` gets the
    /// buffer and the `(start, end)` ranges of the complete chunks in it, in order, so that the
    /// caller can process one buffer's chunks in parallel. Returns the number of bytes read.
    pub fn run<R: Read, E: From<io::Error>>(
        &mut self,
        reader: &mut R,
        limit: u64,
        mut sink: impl FnMut(&[u8], &[(usize, usize)]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max_size as usize;
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        let mut cuts = Vec::new();
        loop {
            // Fill the buffer as far as it goes (short reads are normal for pipes and NFS).
            while !eof && filled < self.buf.len() {
                let want = (self.buf.len() - filled).min(usize::try_from(limit - total).unwrap_or(usize::MAX));
                if want == 0 {
                    eof = true;
                    break;
                }
                match reader.read(&mut self.buf[filled..filled + want]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        filled += n;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let cdc =
                FastCDC::new(&self.buf[..filled], self.params.min_size, self.params.avg_size, self.params.max_size);
            let mut start = 0usize;
            cuts.clear();
            while start < filled {
                let remaining = filled - start;
                if !eof && remaining < max {
                    break; // the cut may depend on bytes not read yet
                }
                let (_, end) = cdc.cut(start, remaining);
                cuts.push((start, end));
                start = end;
            }
            if !cuts.is_empty() {
                sink(&self.buf[..filled], &cuts)?;
            }
            if eof {
                return Ok(total);
            }
            self.buf.copy_within(start..filled, 0);
            filled -= start;
        }
    }
}

/// Chunk boundaries of an in-memory slice (tests and benchmarks).
#[must_use]
pub fn boundaries(params: ChunkerParams, data: &[u8]) -> Vec<usize> {
    let cdc = FastCDC::new(data, params.min_size, params.avg_size, params.max_size);
    cdc.map(|c| c.offset + c.length).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that returns at most `step` bytes per call, to split reads oddly.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_boundaries(params: ChunkerParams, data: &[u8], buf: usize, step: usize) -> Vec<usize> {
        let mut chunker = Chunker::new(params, buf);
        let mut ends = Vec::new();
        let mut pos = 0;
        let mut reader = Dribble { data, step };
        chunker
            .run::<_, io::Error>(&mut reader, u64::MAX, |_, cuts| {
                for (s, e) in cuts {
                    pos += e - s;
                    ends.push(pos);
                }
                Ok(())
            })
            .unwrap();
        ends
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn boundaries_do_not_depend_on_buffer_or_read_sizes(
            len in 0usize..600_000,
            seed in any::<u64>(),
            buf in 1usize..400_000,
            step in 1usize..200_000,
        ) {
            let params = ChunkerParams::default();
            let data = pseudo_random(len, seed);
            let expected = boundaries(params, &data);
            prop_assert_eq!(stream_boundaries(params, &data, buf, step), expected);
        }
    }

    #[test]
    fn sizes_stay_within_bounds_and_limit_is_honoured() {
        let params = ChunkerParams::default();
        let data = pseudo_random(3 << 20, 42);
        let ends = stream_boundaries(params, &data, 1 << 20, 1 << 16);
        assert_eq!(*ends.last().unwrap(), data.len());
        let mut prev = 0;
        for (i, &e) in ends.iter().enumerate() {
            let len = e - prev;
            assert!(len <= params.max_size as usize);
            if i + 1 < ends.len() {
                assert!(len >= params.min_size as usize);
            }
            prev = e;
        }
        let avg = data.len() / ends.len();
        assert!((3000..8192).contains(&avg), "average chunk {avg}");
        let mut chunker = Chunker::new(params, 0);
        let read = chunker.run::<_, io::Error>(&mut &data[..], 100_000, |_, _| Ok(())).unwrap();
        assert_eq!(read, 100_000);
    }
}
