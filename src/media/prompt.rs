//! The prompt cache: every recorded prompt and the music on hold, loaded once at
//! start from a directory of 8 kHz, 16-bit, mono PCM WAV files and shared by all
//! calls through `Arc`.
//!
//! A [`Prompt`] keeps its linear PCM and its µ-law and A-law encodings, all cut
//! into whole 20 ms frames, so sending a frame is a slice, never an encoding.
//! A [`Playback`] walks a playlist of prompts frame by frame for the pacer,
//! chaining prompts without a gap and looping for music on hold.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::g711::Codec;

/// Sample rate every prompt must have.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
const FRAME_SAMPLES: usize = 160;
/// How deep `load_dir` descends (guards against symlink loops).
const MAX_DEPTH: usize = 16;
/// What the format error asks for.
const EXPECTED: &str = "8000 Hz, 16-bit, mono, PCM";

/// Why a prompt file could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read prompt {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("prompt {} is not a WAV file: {reason}", path.display())]
    NotWav { path: PathBuf, reason: String },
    #[error(
        "prompt {} is {found}, expected {EXPECTED} \
         (convert with: sox IN -r 8000 -b 16 -e signed-integer -c 1 OUT)",
        path.display()
    )]
    WrongFormat { path: PathBuf, found: String },
    #[error("prompt {} has no samples", path.display())]
    Empty { path: PathBuf },
}

impl PromptError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PromptError::Io { path, .. }
            | PromptError::NotWav { path, .. }
            | PromptError::WrongFormat { path, .. }
            | PromptError::Empty { path } => path,
        }
    }
}

/// One prompt: linear PCM kept once, plus its encodings per codec, all as whole
/// 20 ms frames (160 samples; the last frame padded with silence).
#[derive(Clone)]
pub struct Prompt {
    name: Arc<str>,
    path: Option<PathBuf>,
    /// Samples before padding.
    samples: usize,
    pcm: Arc<[i16]>,
    pcmu: Arc<[u8]>,
    pcma: Arc<[u8]>,
}

impl fmt::Debug for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompt")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("samples", &self.samples)
            .field("frames", &self.frames())
            .finish()
    }
}

// `EMBEDDED_PROMPTS: &[(&str, &[u8])]`, written by build.rs from prompts/.
include!(concat!(env!("OUT_DIR"), "/embedded_prompts.rs"));

impl Prompt {
    /// Reads a WAV file; it must be 8000 Hz, 16-bit integer PCM, mono, and not empty.
    pub fn load(name: &str, path: &Path) -> Result<Prompt, PromptError> {
        let file = File::open(path).map_err(|source| PromptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::read(name, path, BufReader::new(file))
    }

    /// Reads a WAV held in memory (the prompts compiled into the binary);
    /// `path` names it in errors.
    pub fn from_wav_bytes(name: &str, path: &Path, bytes: &[u8]) -> Result<Prompt, PromptError> {
        Self::read(name, path, io::Cursor::new(bytes))
    }

    fn read(name: &str, path: &Path, source: impl io::Read) -> Result<Prompt, PromptError> {
        let mut reader = hound::WavReader::new(source).map_err(|e| header_error(path, e))?;
        let spec = reader.spec();
        if spec.sample_rate != SAMPLE_RATE
            || spec.bits_per_sample != 16
            || spec.channels != 1
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(PromptError::WrongFormat {
                path: path.to_path_buf(),
                found: describe(&spec),
            });
        }
        let pcm = reader
            .samples::<i16>()
            .collect::<Result<Vec<i16>, _>>()
            .map_err(|e| match e {
                hound::Error::IoError(source) if !is_short_read(&source) => PromptError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                other => PromptError::NotWav {
                    path: path.to_path_buf(),
                    reason: format!("its sample data is cut short or corrupt ({other})"),
                },
            })?;
        if pcm.is_empty() {
            return Err(PromptError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut prompt = Prompt::from_pcm(name, pcm);
        prompt.path = Some(path.to_path_buf());
        Ok(prompt)
    }

    /// A prompt from 8 kHz linear samples (tests, synthesised tones).
    pub fn from_pcm(name: &str, mut pcm: Vec<i16>) -> Prompt {
        let samples = pcm.len();
        let padded = samples.div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
        let encode = |codec: Codec| -> Arc<[u8]> {
            let mut out = vec![codec.silence(); padded];
            codec.encode(&pcm, &mut out[..samples]);
            out.into()
        };
        let pcmu = encode(Codec::Pcmu);
        let pcma = encode(Codec::Pcma);
        pcm.resize(padded, 0);
        Prompt {
            name: name.into(),
            path: None,
            samples,
            pcm: pcm.into(),
            pcmu,
            pcma,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from (None when built from samples).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Length of the original samples (without the padding of the last frame).
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
    }

    /// Number of 20 ms frames.
    pub fn frames(&self) -> usize {
        self.pcm.len() / FRAME_SAMPLES
    }

    /// Frame `index` encoded with `codec`: 160 bytes.
    pub fn frame(&self, codec: Codec, index: usize) -> Option<&[u8]> {
        let data = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        };
        frame_of(data, index)
    }

    /// Frame `index` as linear PCM: 160 samples.
    pub fn pcm_frame(&self, index: usize) -> Option<&[i16]> {
        frame_of(&self.pcm, index)
    }
}

fn frame_of<T>(data: &[T], index: usize) -> Option<&[T]> {
    let start = index.checked_mul(FRAME_SAMPLES)?;
    data.get(start..start.checked_add(FRAME_SAMPLES)?)
}

/// hound reports running out of bytes as `UnexpectedEof` or as `Other`
/// ("Failed to read enough bytes."): a short file, not a failing disk.
fn is_short_read(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
    )
}

/// Maps an error of hound's header parsing: only a real read failure is I/O.
fn header_error(path: &Path, e: hound::Error) -> PromptError {
    let path = path.to_path_buf();
    match e {
        hound::Error::IoError(source) if !is_short_read(&source) => {
            PromptError::Io { path, source }
        }
        hound::Error::IoError(_) => PromptError::NotWav {
            path,
            reason: "too short for a WAV header".into(),
        },
        hound::Error::Unsupported => PromptError::WrongFormat {
            path,
            found: "a WAV encoding that is not linear PCM (compressed, µ-law or A-law?)".into(),
        },
        other => PromptError::NotWav {
            path,
            reason: other.to_string(),
        },
    }
}

fn describe(spec: &hound::WavSpec) -> String {
    let channels = match spec.channels {
        1 => "mono".to_string(),
        2 => "stereo".to_string(),
        n => format!("{n} channels"),
    };
    let format = match spec.sample_format {
        hound::SampleFormat::Int => "PCM",
        hound::SampleFormat::Float => "floating point",
    };
    format!(
        "{} Hz, {}-bit, {channels}, {format}",
        spec.sample_rate, spec.bits_per_sample
    )
}

/// All prompts of a directory tree, loaded once and shared (Arc) by every call.
#[derive(Debug, Default)]
pub struct PromptLibrary {
    /// "en/greeting" → prompt, "moh/default" → music on hold.
    prompts: BTreeMap<String, Arc<Prompt>>,
}

impl PromptLibrary {
    /// Loads every *.wav under `root` (recursively); names are paths relative to
    /// root without ".wav", with '/' separators, e.g. "en/greeting",
    /// "moh/default". Returns every bad file's error, not just the first.
    pub fn load_dir(root: &Path) -> Result<PromptLibrary, Vec<PromptError>> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        collect_wavs(root, root, 0, &mut files, &mut errors);
        let mut prompts = BTreeMap::new();
        for (name, path) in files {
            match Prompt::load(&name, &path) {
                Ok(prompt) => {
                    prompts.insert(name, Arc::new(prompt));
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        tracing::info!(
            dir = %root.display(),
            prompts = prompts.len(),
            "prompt library loaded"
        );
        Ok(PromptLibrary { prompts })
    }

    /// A library of prompts built in memory (tests, synthesised tones).
    /// The default prompt set compiled into the binary, so hotline runs with
    /// no prompt files on disk.
    pub fn embedded() -> Result<PromptLibrary, Vec<PromptError>> {
        let mut prompts = Vec::new();
        let mut errors = Vec::new();
        for (name, bytes) in EMBEDDED_PROMPTS {
            let path = Path::new("(embedded)").join(format!("{name}.wav"));
            match Prompt::from_wav_bytes(name, &path, bytes) {
                Ok(p) => prompts.push(p),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Self::from_prompts(prompts))
        } else {
            Err(errors)
        }
    }

    pub fn from_prompts(prompts: impl IntoIterator<Item = Prompt>) -> PromptLibrary {
        PromptLibrary {
            prompts: prompts
                .into_iter()
                .map(|p| (p.name().to_string(), Arc::new(p)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Prompt>> {
        self.prompts.get(name).cloned()
    }

    /// Looks up `name` for `language` ("en"), falling back to "en" when the
    /// language lacks it: "greeting" + "zh" → "zh/greeting", else "en/greeting".
    /// A name that is already a path ("moh/default") is found as it is.
    pub fn localized(&self, language: &str, name: &str) -> Option<Arc<Prompt>> {
        self.get(&format!("{language}/{name}"))
            .or_else(|| self.get(&format!("en/{name}")))
            .or_else(|| name.contains('/').then(|| self.get(name)).flatten())
    }

    /// Every prompt name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prompts.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

/// Gathers (name, path) of every *.wav under `dir`, in sorted order.
fn collect_wavs(
    root: &Path,
    dir: &Path,
    depth: usize,
    files: &mut Vec<(String, PathBuf)>,
    errors: &mut Vec<PromptError>,
) {
    let io_error = |path: &Path, source: io::Error| PromptError::Io {
        path: path.to_path_buf(),
        source,
    };
    if depth > MAX_DEPTH {
        errors.push(io_error(
            dir,
            io::Error::other(format!(
                "directories nested deeper than {MAX_DEPTH} levels (a symlink loop?)"
            )),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(io_error(dir, e));
            return;
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => errors.push(io_error(dir, e)),
        }
    }
    paths.sort();
    for path in paths {
        // Follows symlinks, so a linked prompt or directory counts.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                errors.push(io_error(&path, e));
                continue;
            }
        };
        if meta.is_dir() {
            collect_wavs(root, &path, depth + 1, files, errors);
        } else if meta.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
        {
            let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push((name, path));
        }
    }
}

/// A playlist cursor for the pacer: plays its prompts back to back, frame by
/// frame, with no frame inserted between them; loops when `looping` (music on
/// hold). Allocation-free once built.
#[derive(Debug, Clone)]
pub struct Playback {
    prompts: Vec<Arc<Prompt>>,
    looping: bool,
    /// The prompt playing.
    index: usize,
    /// The next frame of that prompt.
    frame: usize,
}

impl Playback {
    pub fn new(prompts: Vec<Arc<Prompt>>, looping: bool) -> Playback {
        Playback {
            prompts,
            looping,
            index: 0,
            frame: 0,
        }
    }

    /// The next 20 ms frame in `codec`, None once the playlist is over (never,
    /// when looping, unless every prompt is empty).
    pub fn next_frame(&mut self, codec: Codec) -> Option<&[u8]> {
        let Some((index, frame)) = self.upcoming() else {
            self.index = self.prompts.len();
            self.frame = 0;
            return None;
        };
        self.index = index;
        self.frame = frame + 1;
        self.prompts.get(index)?.frame(codec, frame)
    }

    /// True when `next_frame` has nothing more to give.
    pub fn is_finished(&self) -> bool {
        self.upcoming().is_none()
    }

    /// The prompt playing: the one whose frame `next_frame` returned last
    /// (before the first frame, the one that will play first); None once
    /// `next_frame` has returned None.
    pub fn current_prompt(&self) -> Option<&str> {
        let index = if self.frame > 0 {
            self.index
        } else {
            self.upcoming()?.0
        };
        self.prompts.get(index).map(|p| p.name())
    }

    /// Where the next frame comes from: (prompt, frame), skipping empty prompts
    /// and wrapping around when looping.
    fn upcoming(&self) -> Option<(usize, usize)> {
        let count = self.prompts.len();
        let (mut index, mut frame) = (self.index, self.frame);
        // Every prompt once, plus the current one again from its start.
        for _ in 0..=count {
            let prompt = self.prompts.get(index)?;
            if frame < prompt.frames() {
                return Some((index, frame));
            }
            index += 1;
            frame = 0;
            if index == count && self.looping {
                index = 0;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sample_rate: u32, channels: u16, bits: u16) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        }
    }

    fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[i16]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            if spec.bits_per_sample == 8 {
                w.write_sample((s >> 8) as i8).unwrap();
            } else {
                w.write_sample(s).unwrap();
            }
        }
        w.finalize().unwrap();
    }

    fn tone(samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| ((i as f32 * 0.2).sin() * 12000.0) as i16)
            .collect()
    }

    fn prompt(name: &str, frames: usize) -> Arc<Prompt> {
        Arc::new(Prompt::from_pcm(name, tone(frames * FRAME_SAMPLES)))
    }

    fn rms(pcm: &[i16]) -> f64 {
        let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / pcm.len().max(1) as f64).sqrt()
    }

    #[test]
    fn a_wav_becomes_whole_frames_in_both_laws_padded_with_silence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello.wav");
        let samples = tone(1000);
        write_wav(&path, spec(8000, 1, 16), &samples);

        let p = Prompt::load("hello", &path).unwrap();
        assert_eq!(p.name(), "hello");
        assert_eq!(p.path(), Some(path.as_path()));
        assert_eq!(p.frames(), 1000usize.div_ceil(160));
        assert_eq!(p.duration(), Duration::from_millis(125));
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut expected = vec![0u8; 1000];
            codec.encode(&samples, &mut expected);
            let mut got = Vec::new();
            for i in 0..p.frames() {
                let frame = p.frame(codec, i).unwrap();
                assert_eq!(frame.len(), 160);
                got.extend_from_slice(frame);
            }
            assert_eq!(&got[..1000], &expected[..]);
            assert!(
                got[1000..].iter().all(|&b| b == codec.silence()),
                "last frame padded with {codec:?} silence"
            );
            assert_eq!(p.frame(codec, p.frames()), None);
        }
        let last = p.pcm_frame(p.frames() - 1).unwrap();
        assert_eq!(last.len(), 160);
        assert_eq!(&last[..40], &samples[960..]);
        assert!(last[40..].iter().all(|&s| s == 0));
        assert_eq!(p.pcm_frame(0).unwrap(), &samples[..160]);
        assert_eq!(p.pcm_frame(p.frames()), None);
        assert_eq!(p.pcm_frame(usize::MAX), None);
    }

    #[test]
    fn exact_multiples_of_a_frame_get_no_padding_frame() {
        let p = Prompt::from_pcm("t", tone(320));
        assert_eq!(p.frames(), 2);
        assert_eq!(p.duration(), Duration::from_millis(40));
        assert_eq!(Prompt::from_pcm("e", Vec::new()).frames(), 0);
    }

    #[test]
    fn bad_files_are_refused_with_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_wav(&d.join("cd.wav"), spec(44_100, 1, 16), &tone(441));
        write_wav(&d.join("stereo.wav"), spec(8000, 2, 16), &tone(320));
        write_wav(&d.join("eight.wav"), spec(8000, 1, 8), &tone(160));
        write_wav(&d.join("empty.wav"), spec(8000, 1, 16), &[]);
        std::fs::write(d.join("text.wav"), "this is not a wave file").unwrap();
        std::fs::write(d.join("tiny.wav"), "RI").unwrap();

        let err = |name: &str| {
            let path = d.join(name);
            let e = Prompt::load("x", &path).unwrap_err();
            assert_eq!(e.path(), path);
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            message
        };
        let m = err("cd.wav");
        assert!(m.contains("44100 Hz, 16-bit, mono, PCM"), "{m}");
        assert!(m.contains("expected 8000 Hz, 16-bit, mono, PCM"), "{m}");
        let m = err("stereo.wav");
        assert!(m.contains("8000 Hz, 16-bit, stereo"), "{m}");
        let m = err("eight.wav");
        assert!(m.contains("8000 Hz, 8-bit, mono"), "{m}");
        let m = err("text.wav");
        assert!(m.contains("not a WAV file"), "{m}");
        let m = err("tiny.wav");
        assert!(m.contains("not a WAV file"), "{m}");
        let m = err("empty.wav");
        assert!(m.contains("no samples"), "{m}");
        let m = err("missing.wav");
        assert!(m.starts_with("cannot read prompt"), "{m}");
    }

    #[test]
    fn load_dir_names_by_relative_path_and_reports_every_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["en", "zh", "moh/extra"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let good = spec(8000, 1, 16);
        write_wav(&d.join("en/greeting.wav"), good, &tone(800));
        write_wav(&d.join("en/menu.wav"), good, &tone(800));
        write_wav(&d.join("zh/greeting.wav"), good, &tone(800));
        write_wav(&d.join("moh/default.WAV"), good, &tone(1600));
        write_wav(&d.join("moh/extra/jazz.wav"), good, &tone(1600));
        std::fs::write(d.join("README.md"), "not a prompt").unwrap();

        let library = PromptLibrary::load_dir(d).unwrap();
        assert_eq!(
            library.names().collect::<Vec<_>>(),
            [
                "en/greeting",
                "en/menu",
                "moh/default",
                "moh/extra/jazz",
                "zh/greeting"
            ]
        );
        assert_eq!(library.len(), 5);
        assert!(!library.is_empty());
        assert_eq!(library.get("moh/default").unwrap().frames(), 10);
        assert!(library.get("greeting").is_none());

        write_wav(&d.join("en/bad_rate.wav"), spec(16_000, 1, 16), &tone(800));
        std::fs::write(d.join("zh/junk.wav"), "junk").unwrap();
        write_wav(&d.join("moh/stereo.wav"), spec(8000, 2, 16), &tone(800));
        let errors = PromptLibrary::load_dir(d).unwrap_err();
        let mut paths: Vec<_> = errors.iter().map(|e| e.path().to_path_buf()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                d.join("en/bad_rate.wav"),
                d.join("moh/stereo.wav"),
                d.join("zh/junk.wav")
            ]
        );

        let missing = PromptLibrary::load_dir(&d.join("nowhere")).unwrap_err();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].to_string().contains("nowhere"), "{}", missing[0]);
    }

    #[test]
    fn localized_falls_back_to_english() {
        let library = PromptLibrary::from_prompts([
            Prompt::from_pcm("en/greeting", tone(160)),
            Prompt::from_pcm("en/menu", tone(160)),
            Prompt::from_pcm("zh/greeting", tone(160)),
            Prompt::from_pcm("moh/default", tone(160)),
        ]);
        let name = |p: Option<Arc<Prompt>>| p.map(|p| p.name().to_string());
        assert_eq!(
            name(library.localized("zh", "greeting")).as_deref(),
            Some("zh/greeting")
        );
        assert_eq!(
            name(library.localized("en", "greeting")).as_deref(),
            Some("en/greeting")
        );
        assert_eq!(
            name(library.localized("zh", "menu")).as_deref(),
            Some("en/menu")
        );
        assert_eq!(
            name(library.localized("fr", "menu")).as_deref(),
            Some("en/menu")
        );
        assert_eq!(
            name(library.localized("zh", "moh/default")).as_deref(),
            Some("moh/default")
        );
        assert_eq!(name(library.localized("zh", "nothing")), None);
        assert_eq!(name(library.localized("zh", "default")), None);
    }

    #[test]
    fn playback_chains_prompts_without_a_gap() {
        let a = Arc::new(Prompt::from_pcm("a", tone(3 * 160 + 10)));
        let b = prompt("b", 2);
        let mut playback = Playback::new(vec![a.clone(), b.clone()], false);
        assert!(!playback.is_finished());
        assert_eq!(playback.current_prompt(), Some("a"));
        let mut sent = Vec::new();
        let mut names = Vec::new();
        let mut finished_after = Vec::new();
        while let Some(frame) = playback.next_frame(Codec::Pcma) {
            sent.push(frame.to_vec());
            names.push(playback.current_prompt().unwrap().to_string());
            finished_after.push(playback.is_finished());
        }
        assert_eq!(sent.len(), a.frames() + b.frames());
        assert_eq!(names, ["a", "a", "a", "a", "b", "b"]);
        assert_eq!(finished_after, [false, false, false, false, false, true]);
        let expected: Vec<Vec<u8>> = (0..a.frames())
            .map(|i| a.frame(Codec::Pcma, i).unwrap().to_vec())
            .chain((0..b.frames()).map(|i| b.frame(Codec::Pcma, i).unwrap().to_vec()))
            .collect();
        assert_eq!(
            sent, expected,
            "exactly a's frames then b's, nothing between"
        );
        assert!(playback.is_finished());
        assert_eq!(playback.current_prompt(), None);
        assert_eq!(playback.next_frame(Codec::Pcma), None);
    }

    #[test]
    fn playback_reports_finished_with_the_last_frame_and_skips_empty_prompts() {
        let empty = Arc::new(Prompt::from_pcm("empty", Vec::new()));
        let mut playback = Playback::new(vec![empty.clone(), prompt("a", 1), empty], false);
        assert_eq!(playback.current_prompt(), Some("a"));
        assert!(playback.next_frame(Codec::Pcmu).is_some());
        assert!(playback.is_finished());
        assert_eq!(playback.next_frame(Codec::Pcmu), None);

        let mut nothing = Playback::new(Vec::new(), true);
        assert!(nothing.is_finished());
        assert_eq!(nothing.next_frame(Codec::Pcmu), None);
        assert_eq!(nothing.current_prompt(), None);
        let mut silent_loop =
            Playback::new(vec![Arc::new(Prompt::from_pcm("e", Vec::new()))], true);
        assert!(silent_loop.is_finished());
        assert_eq!(silent_loop.next_frame(Codec::Pcmu), None);
    }

    #[test]
    fn music_on_hold_loops() {
        let moh = prompt("moh/default", 3);
        let mut playback = Playback::new(vec![moh.clone()], true);
        for round in 0..4 {
            for i in 0..3 {
                let frame = playback.next_frame(Codec::Pcmu).unwrap();
                assert_eq!(frame, moh.frame(Codec::Pcmu, i).unwrap(), "round {round}");
                assert_eq!(playback.current_prompt(), Some("moh/default"));
            }
        }
        assert!(!playback.is_finished());

        // A looping playlist of two prompts plays a, b, a, b…
        let mut two = Playback::new(vec![prompt("a", 1), prompt("b", 2)], true);
        let names: Vec<String> = (0..7)
            .map(|_| {
                two.next_frame(Codec::Pcma).unwrap();
                two.current_prompt().unwrap().to_string()
            })
            .collect();
        assert_eq!(names, ["a", "b", "b", "a", "b", "b", "a"]);
    }

    /// Every prompt the default flows use, in both languages.
    const NAMES: &[&str] = &[
        "greeting",
        "menu",
        "invalid",
        "please_hold",
        "thank_you_for_waiting",
        "position",
        "estimated_wait",
        "minutes",
        "digit_0",
        "digit_1",
        "digit_2",
        "digit_3",
        "digit_4",
        "digit_5",
        "digit_6",
        "digit_7",
        "digit_8",
        "digit_9",
        "goodbye",
        "after_hours",
        "leave_number",
        "callback_recorded",
        "survey",
        "enter_account",
        "enter_pin",
        "balance_is",
        "point",
        "agent_number",
        "will_serve_you",
        "busy",
        "blocked",
        "lookup_failed",
        "callback_confirm",
        "callback_confirm_keys",
        "callback_number_refused",
    ];

    #[test]
    fn the_shipped_prompts_are_complete_and_audible() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let library = match PromptLibrary::load_dir(&root) {
            Ok(library) => library,
            Err(errors) => panic!("{errors:#?}"),
        };
        for language in ["en", "zh"] {
            for name in NAMES {
                let full = format!("{language}/{name}");
                let p = library
                    .get(&full)
                    .unwrap_or_else(|| panic!("{full} is missing from {}", root.display()));
                assert!(
                    p.duration() >= Duration::from_millis(300)
                        && p.duration() < Duration::from_secs(20),
                    "{full} lasts {:?}",
                    p.duration()
                );
                let pcm: Vec<i16> = (0..p.frames())
                    .flat_map(|i| p.pcm_frame(i).unwrap().iter().copied())
                    .collect();
                // -3 dBFS peaks give speech an RMS in the thousands.
                assert!(
                    rms(&pcm) > 800.0,
                    "{full} is (nearly) silent: RMS {}",
                    rms(&pcm)
                );
            }
        }
        let moh = library.get("moh/default").expect("moh/default");
        assert!(
            moh.duration() >= Duration::from_secs(20),
            "{:?}",
            moh.duration()
        );
        let pcm: Vec<i16> = (0..moh.frames())
            .flat_map(|i| moh.pcm_frame(i).unwrap().iter().copied())
            .collect();
        assert!(rms(&pcm) > 800.0, "music on hold is (nearly) silent");
    }

    #[test]
    fn the_embedded_set_is_the_prompts_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let on_disk = PromptLibrary::load_dir(&dir).unwrap();
        let embedded = PromptLibrary::embedded().unwrap();
        assert_eq!(
            on_disk.names().collect::<Vec<_>>(),
            embedded.names().collect::<Vec<_>>()
        );
        let (a, b) = (
            on_disk.get("en/greeting").unwrap(),
            embedded.get("en/greeting").unwrap(),
        );
        assert_eq!(a.frames(), b.frames());
        assert_eq!(a.frame(Codec::Pcmu, 3), b.frame(Codec::Pcmu, 3));
    }
}
