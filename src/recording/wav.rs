//! A WAV file that is valid while it grows: 8 kHz 16-bit linear PCM, the
//! canonical 44-byte header, and the RIFF and `data` sizes rewritten after
//! every append, so whatever reached the file is playable even if the
//! process dies before [`WavFile::finish`].

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

pub const SAMPLE_RATE: u32 = 8000;
pub const HEADER_LEN: u64 = 44;
/// RIFF sizes are 32-bit: the data chunk stops short of 4 GiB (about 37 h
/// of stereo).
const MAX_DATA: u64 = u32::MAX as u64 - HEADER_LEN;

const ZEROS: [u8; 4096] = [0; 4096];

/// The header of a file holding `data_len` bytes of samples.
pub fn header(channels: u16, data_len: u32) -> [u8; 44] {
    let block_align = channels * 2;
    let byte_rate = SAMPLE_RATE * u32::from(block_align);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(data_len.saturating_add(36)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// What a header says: (channels, sample rate, RIFF size, data size).
pub fn parse_header(bytes: &[u8]) -> Option<(u16, u32, u32, u32)> {
    if bytes.len() < 44 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    if &bytes[12..16] != b"fmt " || &bytes[36..40] != b"data" {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some((u16_at(22), u32_at(24), u32_at(4), u32_at(40)))
}

/// An open recording file.
pub struct WavFile {
    file: File,
    channels: u16,
    data_len: u64,
}

impl WavFile {
    /// Creates `path`, which must not exist: a recording is never overwritten.
    pub fn create(path: &Path, channels: u16) -> io::Result<WavFile> {
        let file = File::options().write(true).create_new(true).open(path)?;
        WavFile::on(file, channels)
    }

    /// Starts a recording on an open, empty file.
    pub fn on(mut file: File, channels: u16) -> io::Result<WavFile> {
        file.write_all(&header(channels, 0))?;
        Ok(WavFile {
            file,
            channels,
            data_len: 0,
        })
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Bytes of samples so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Appends `data`, then `silence` bytes of zeros, and brings the header
    /// up to date. Not synced: the data is in the OS's hands, which is what
    /// survives a crash of the process.
    pub fn append(&mut self, data: &[u8], silence: u64) -> io::Result<()> {
        let total = self.data_len + data.len() as u64 + silence;
        if total > MAX_DATA {
            return Err(io::Error::other(
                "the recording reached the 4 GiB limit of a WAV file",
            ));
        }
        self.file.write_all(data)?;
        let mut left = silence;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.file.write_all(&ZEROS[..n])?;
            left -= n as u64;
        }
        self.data_len = total;
        self.patch()
    }

    fn patch(&mut self) -> io::Result<()> {
        let data = u32::try_from(self.data_len).unwrap_or(u32::MAX);
        self.file.seek(SeekFrom::Start(4))?;
        self.file
            .write_all(&data.saturating_add(36).to_le_bytes())?;
        self.file.seek(SeekFrom::Start(40))?;
        self.file.write_all(&data.to_le_bytes())?;
        self.file.seek(SeekFrom::End(0))?;
        Ok(())
    }

    /// Writes the final header and syncs the file to disk; returns the
    /// bytes of samples.
    pub fn finish(mut self) -> io::Result<u64> {
        self.patch()?;
        self.file.sync_all()?;
        Ok(self.data_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn the_header_is_right_after_every_append_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        let mut wav = WavFile::create(&path, 2).unwrap();
        let bytes = read(&path);
        assert_eq!(bytes.len(), 44);
        assert_eq!(parse_header(&bytes), Some((2, 8000, 36, 0)));
        assert_eq!(&bytes[28..32], &32_000u32.to_le_bytes(), "byte rate");
        assert_eq!(&bytes[32..34], &4u16.to_le_bytes(), "block align");

        wav.append(&[1, 2, 3, 4], 0).unwrap();
        let bytes = read(&path);
        assert_eq!(parse_header(&bytes), Some((2, 8000, 40, 4)));
        assert_eq!(&bytes[44..], &[1, 2, 3, 4]);

        // Silence after the data: zeros, counted in the sizes.
        wav.append(&[5, 6, 7, 8], 5000).unwrap();
        let bytes = read(&path);
        assert_eq!(bytes.len(), 44 + 8 + 5000);
        assert_eq!(parse_header(&bytes), Some((2, 8000, 36 + 5008, 5008)));
        assert!(bytes[52..].iter().all(|&b| b == 0));

        assert_eq!(wav.finish().unwrap(), 5008);
        let bytes = read(&path);
        assert_eq!(parse_header(&bytes), Some((2, 8000, 36 + 5008, 5008)));
        // hound, an independent reader, agrees.
        let reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        assert_eq!(reader.duration(), 5008 / 4);
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        std::fs::write(&path, b"precious").unwrap();
        let err = WavFile::create(&path, 1).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read(&path), b"precious");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_an_error() {
        let file = File::options().write(true).open("/dev/full").unwrap();
        let err = WavFile::on(file, 1).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    }
}
