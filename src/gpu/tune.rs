//! Autotuning: which [`MatmulVariant`] computes each matmul of a run, chosen by timing every
//! variant the device can run on the run's own shapes, and remembered per adapter.
//!
//! At start-up each distinct matmul of the run — (op, batch rows, layer inputs, layer outputs) —
//! is timed, the largest first, with every variant that fits it, less those more than
//! [`OUTPACED`] times slower than another on a larger matmul of the run: each candidate's
//! pipeline is compiled when it is first timed (compiling is most of a first run's start-up on
//! lavapipe, a tenth of a second or more per pipeline), run once on a tiny product (a driver that
//! compiles at first use compiles then), once on the matmul (a candidate far slower than the best
//! so far stops there), then in one submit of as many repetitions as fill [`TIMED_BUDGET`], timed
//! by the device's own clock (two timestamp queries around the pass) where it has
//! `Features::TIMESTAMP_QUERY`, else by the wall clock around the submit and its completion. The
//! fastest wins. The choices are cached in `tune.json` in the user's cache folder (`~/.cache/gpu-mlp/` on
//! Linux; `GPU_MLP_CACHE_DIR` names another folder), per adapter (name, driver and driver info)
//! and gpu-mlp version, so the next run on the same adapter starts without timing. A cache file
//! that is unreadable, corrupt or from another version is ignored with one line on stderr, never
//! an error; it is written atomically (a temporary file renamed over it).

use super::context::GpuContext;
use super::kernels::matmul::{MatmulBindings, MatmulOp, MatmulParams, MatmulPlan, MatmulVariant};
use super::kernels::{params_buffer, BatchEntry, BatchTable, Kernels};
use crate::backend::Workload;
use crate::dropout::Dropout;
use crate::error::GpuError;
use crate::network::{Activation, LayerShape};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use web_time::Instant;
use wgpu::BufferUsages as U;

/// `--tune`: how a GPU run picks its matmul variants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TuneMode {
    /// Time the variants again (and cache the choice).
    Fresh,
    /// Use the cached choice for this adapter; time only what the cache lacks.
    #[default]
    Cached,
    /// No timing: every matmul uses the default variant.
    Off,
}

/// Device seconds one candidate's timed submit aims to fill: enough repetitions of a small
/// matmul to rise above the submit's own cost, one of a large one.
pub const TIMED_BUDGET: f64 = 0.004;

/// A candidate more than this many times slower than the fastest on one of the run's matmuls is
/// not compiled for the smaller ones: compiling takes a driver a tenth of a second or more per
/// pipeline (lavapipe, at first use), most of a first run's start-up, and across the ops and
/// shapes of one network a variant's rank changes little.
pub const OUTPACED: f64 = 1.5;

/// Most repetitions in one timed submit.
const MAX_REPEATS: u32 = 64;

/// A candidate whose first dispatch took this many times the best first dispatch so far is not
/// timed further: it cannot win.
const HOPELESS: f64 = 2.0;

/// The environment variable that names the cache folder (tests point it at a temporary one).
pub const CACHE_DIR_ENV: &str = "GPU_MLP_CACHE_DIR";

/// Where the tuning cache lives: `tune.json` in a folder, or nowhere.
#[derive(Clone, Debug)]
pub struct TuneCache {
    pub dir: Option<PathBuf>,
}

impl TuneCache {
    /// `$GPU_MLP_CACHE_DIR`, else the user's cache folder's `gpu-mlp` (`dirs::cache_dir`), else
    /// none (choices are then timed at every start).
    pub fn from_env() -> TuneCache {
        let dir = match std::env::var_os(CACHE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => user_cache_dir(),
        };
        TuneCache { dir }
    }

    /// A cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> TuneCache {
        TuneCache { dir: Some(dir.into()) }
    }

    pub fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("tune.json"))
    }

    /// The file's choices; an empty file when there is none, or when it cannot be used (said in
    /// one line on stderr).
    pub fn load(&self) -> CacheFile {
        match self.read() {
            Ok(file) => file.unwrap_or_default(),
            Err(why) => {
                eprintln!("note: ignoring the tuning cache {why}");
                CacheFile::default()
            }
        }
    }

    /// The file, None when there is none; an error saying why it cannot be used.
    fn read(&self) -> Result<Option<CacheFile>, String> {
        let Some(path) = self.path() else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(file) if file.version == version() => Ok(Some(file)),
            Ok(file) => Err(format!(
                "{}: written by gpu-mlp {}, this is {}",
                path.display(),
                file.version,
                version()
            )),
            Err(e) => Err(format!("{}: not a tuning cache ({e})", path.display())),
        }
    }

    /// Writes `file` atomically: a temporary file in the same folder, renamed over the cache. A
    /// failure is said in one line on stderr; the run goes on.
    pub fn store(&self, file: &CacheFile) {
        let (Some(dir), Some(path)) = (&self.dir, self.path()) else {
            return;
        };
        if let Err(e) = write_atomically(dir, &path, file) {
            eprintln!("note: could not write the tuning cache {}: {e}", path.display());
        }
    }
}

/// The user's cache folder's `gpu-mlp` (`~/.cache/gpu-mlp` on Linux); none in a browser, where
/// the page runs the default variants.
#[cfg(feature = "native")]
fn user_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("gpu-mlp"))
}

#[cfg(not(feature = "native"))]
fn user_cache_dir() -> Option<PathBuf> {
    None
}

#[cfg(not(feature = "native"))]
fn write_atomically(_: &Path, _: &Path, _: &CacheFile) -> std::io::Result<()> {
    Err(std::io::Error::other("no file system in this build"))
}

#[cfg(feature = "native")]
fn write_atomically(dir: &Path, path: &Path, file: &CacheFile) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut temp, text.as_bytes())?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// This build's version: the crate's, and a CRC-32 of every matmul variant's shader source as
/// it is compiled (its WGSL, constants and bindings), "0.1.0+1a2b3c4d". A cache from another
/// build is ignored: its timings are of other kernels.
pub fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut crc = flate2::Crc::new();
        for variant in MatmulVariant::ALL {
            crc.update(variant.name.as_bytes());
            variant.with_source(|source| crc.update(source.text().as_bytes()));
        }
        format!("{}+{:08x}", env!("CARGO_PKG_VERSION"), crc.sum())
    });
    &VERSION
}

/// `tune.json`: per adapter key ([`adapter_key`]), per matmul key ([`matmul_key`]), the name of
/// the fastest variant and its time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CacheFile {
    pub version: String,
    pub adapters: BTreeMap<String, BTreeMap<String, CachedChoice>>,
}

/// One cached choice.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CachedChoice {
    pub variant: String,
    /// Seconds per dispatch when it was timed.
    pub seconds: f64,
}

/// "llvmpipe (LLVM 15.0.6, 256 bits) | llvmpipe Mesa 22.3.6 (LLVM 15.0.6)": the adapter and its
/// driver, what a choice is cached for.
pub fn adapter_key(info: &wgpu::AdapterInfo) -> String {
    format!("{} | {} {}", info.name, info.driver, info.driver_info)
        .trim()
        .to_string()
}

/// "forward 100x784x128": a matmul of `rows` through a layer of `inputs` × `outputs`.
pub fn matmul_key(op: MatmulOp, rows: usize, shape: &LayerShape) -> String {
    format!("{} {rows}x{}x{}", op.short_name(), shape.inputs, shape.outputs)
}

/// What tuning found for one matmul.
#[derive(Clone, Debug)]
pub struct Choice {
    pub key: String,
    pub variant: MatmulVariant,
    /// Seconds per dispatch (as cached, or as just timed).
    pub seconds: f64,
    /// Every candidate's seconds per dispatch, when it was timed in this run (None: from the
    /// cache); a candidate dropped after its first dispatch shows that one.
    pub timings: Option<Vec<(MatmulVariant, f64)>>,
}

/// Where a run's plan came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanSource {
    /// `--tune off`: the default variant everywhere.
    Default,
    /// Every choice from the cache.
    Cached,
    /// At least one choice timed in this run.
    Timed,
    /// A checkpoint's: a resumed run uses the variants it was trained with.
    Checkpoint,
}

/// The kernels a run uses (every pipeline of the plan compiled, and those timed), the plan, and
/// how it was made.
pub struct Tuned {
    pub kernels: Kernels,
    pub plan: MatmulPlan,
    pub report: TuneReport,
}

/// How the plan was made.
#[derive(Clone, Debug)]
pub struct TuneReport {
    pub source: PlanSource,
    pub choices: Vec<Choice>,
    /// Seconds spent compiling and timing candidates (0 without timing).
    pub seconds: f64,
    /// Matmuls timed in this run.
    pub timed: usize,
    /// Whether they were timed by the device's timestamps (else by the wall clock).
    pub timestamps: bool,
}

impl TuneReport {
    /// "tuned in 0.81 s (5 matmuls timed)", "cached", "default (--tune off)", "the checkpoint's".
    pub fn describe(&self) -> String {
        match self.source {
            PlanSource::Default => "default (--tune off)".into(),
            PlanSource::Cached => "cached".into(),
            PlanSource::Timed => format!(
                "tuned in {:.2} s ({} matmuls timed by {})",
                self.seconds,
                self.timed,
                if self.timestamps {
                    "device timestamps"
                } else {
                    "the wall clock"
                }
            ),
            PlanSource::Checkpoint => "the checkpoint's".into(),
        }
    }
}

/// The distinct matmuls of a training step of `work`: (op, rows, shape) for each layer's
/// forward and weight gradient, and the input gradient of every layer but the first.
fn step_matmuls(work: &Workload) -> Vec<(usize, MatmulOp, usize, LayerShape)> {
    let rows = work.batch_size.min(work.train.len()).max(1);
    let layout = work.spec.layout();
    let mut matmuls = Vec::new();
    for (l, shape) in layout.layers.iter().enumerate() {
        for op in MatmulOp::ALL {
            if !(l == 0 && op == MatmulOp::BackwardInput) {
                matmuls.push((l, op, rows, *shape));
            }
        }
    }
    matmuls
}

/// The plan for `work` on `ctx`'s device, as `mode` asks, with the kernels that run it.
pub fn tune(ctx: &GpuContext, work: &Workload, mode: TuneMode, cache: &TuneCache) -> Result<Tuned, GpuError> {
    let layers = work.spec.layers();
    if mode == TuneMode::Off {
        return planned(
            ctx,
            MatmulPlan::uniform(MatmulVariant::DEFAULT, layers),
            PlanSource::Default,
        );
    }
    let started = Instant::now();
    let adapter = adapter_key(&ctx.info);
    let mut file = match mode {
        TuneMode::Cached => cache.load(),
        _ => CacheFile::default(),
    };
    let available = MatmulVariant::available(ctx);
    // The likeliest winners first, so that the bar for cutting the others short is low.
    let mut candidates = available.clone();
    candidates.sort_by_key(|v| MatmulVariant::TUNING_ORDER.iter().position(|t| t == v));
    let cached = file.adapters.get(&adapter).cloned().unwrap_or_default();
    let from_cache = |key: &str, op: MatmulOp, shape: &LayerShape| {
        let choice = cached.get(key)?;
        let variant = MatmulVariant::by_name(&choice.variant).filter(|v| available.contains(v) && v.fits(op, shape))?;
        Some((variant, choice.seconds))
    };
    let matmuls = step_matmuls(work);
    let missing = matmuls
        .iter()
        .any(|(_, op, rows, shape)| from_cache(&matmul_key(*op, *rows, shape), *op, shape).is_none());
    if !missing {
        let mut plan = MatmulPlan::uniform(MatmulVariant::DEFAULT, layers);
        let mut choices = Vec::new();
        for (l, op, rows, shape) in &matmuls {
            let key = matmul_key(*op, *rows, shape);
            let (variant, seconds) = from_cache(&key, *op, shape).expect("every choice is cached");
            plan.layers[*l][*op as usize] = variant;
            push_choice(&mut choices, key, variant, seconds, None);
        }
        let mut tuned = planned(ctx, plan, PlanSource::Cached)?;
        tuned.report.choices = choices;
        return Ok(tuned);
    }
    if Timer::too_large(ctx, work) {
        // The run cannot allocate its own buffers either: the backend says so, naming its own.
        return planned(
            ctx,
            MatmulPlan::uniform(MatmulVariant::DEFAULT, layers),
            PlanSource::Default,
        );
    }
    // No matmul pipeline yet: each candidate compiles when it is first timed, and the run keeps
    // the kernels.
    let mut timer = Timer::new(ctx, Kernels::with_matmul_pipelines(ctx, &[])?, work)?;
    // The largest matmuls first (a stable sort: step order among equals), each timed with the
    // candidates that fit it and were not outpaced on a larger one.
    let mut by_size: Vec<&(usize, MatmulOp, usize, LayerShape)> = matmuls.iter().collect();
    by_size.sort_by_key(|(_, _, rows, shape)| std::cmp::Reverse(rows * shape.inputs * shape.outputs));
    let mut found: Vec<Choice> = Vec::new();
    for (_, op, rows, shape) in by_size {
        let key = matmul_key(*op, *rows, shape);
        if found.iter().any(|c| c.key == key) || from_cache(&key, *op, shape).is_some() {
            continue;
        }
        let fitting: Vec<MatmulVariant> = candidates.iter().copied().filter(|v| v.fits(*op, shape)).collect();
        let timings = timer.time(*op, *rows, shape, &not_outpaced(&fitting, &found))?;
        let &(variant, seconds) = timings
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one candidate");
        push_choice(&mut found, key, variant, seconds, Some(timings));
    }
    let timed = found.len();
    // The plan, and the choices in step order.
    let mut plan = MatmulPlan::uniform(MatmulVariant::DEFAULT, layers);
    let mut choices: Vec<Choice> = Vec::new();
    for (l, op, rows, shape) in &matmuls {
        let key = matmul_key(*op, *rows, shape);
        if let Some(index) = found.iter().position(|c| c.key == key) {
            choices.push(found.swap_remove(index));
        } else if !choices.iter().any(|c| c.key == key) {
            let (variant, seconds) = from_cache(&key, *op, shape).expect("cached where not timed");
            push_choice(&mut choices, key.clone(), variant, seconds, None);
        }
        plan.layers[*l][*op as usize] = choices.iter().find(|c| c.key == key).expect("chosen").variant;
    }
    // The file as it is now: other adapters' choices are kept, and in `cached` mode the shapes
    // another run cached while this one timed them take that run's choice, so that runs sharing
    // a cache share their plans (a run and its rerun sum in the same order).
    if let Ok(Some(latest)) = cache.read() {
        if mode == TuneMode::Cached {
            adopt_cached(&latest, &adapter, &available, &matmuls, &mut plan, &mut choices);
        }
        file = latest;
    }
    let entry = file.adapters.entry(adapter).or_default();
    for choice in &choices {
        let cached = CachedChoice {
            variant: choice.variant.name.to_string(),
            seconds: choice.seconds,
        };
        match mode {
            TuneMode::Fresh => {
                entry.insert(choice.key.clone(), cached);
            }
            _ => {
                entry.entry(choice.key.clone()).or_insert(cached);
            }
        }
    }
    let timestamps = timer.stamps.is_some();
    file.version = version().to_string();
    cache.store(&file);
    let mut kernels = timer.kernels;
    // A choice adopted from the cache may name a pipeline not timed here.
    kernels.compile_matmuls(ctx, &plan.pipelines())?;
    Ok(Tuned {
        kernels,
        plan,
        report: TuneReport {
            source: PlanSource::Timed,
            choices,
            seconds: started.elapsed().as_secs_f64(),
            timed,
            timestamps,
        },
    })
}

/// The variants of `fitting` (those that fit a matmul) that no larger matmul timed before it
/// (`larger`) found more than [`OUTPACED`] times slower than another of `fitting`; all of
/// `fitting` if that leaves none.
fn not_outpaced(fitting: &[MatmulVariant], larger: &[Choice]) -> Vec<MatmulVariant> {
    let outpaced = |variant: &MatmulVariant| {
        larger.iter().filter_map(|c| c.timings.as_ref()).any(|timings| {
            let seconds = |v: &MatmulVariant| timings.iter().find(|(t, _)| t == v).map(|(_, s)| *s);
            let best = fitting.iter().filter_map(seconds).fold(f64::INFINITY, f64::min);
            seconds(variant).is_some_and(|s| s > OUTPACED * best)
        })
    };
    let kept: Vec<MatmulVariant> = fitting.iter().copied().filter(|v| !outpaced(v)).collect();
    if kept.is_empty() {
        fitting.to_vec()
    } else {
        kept
    }
}

/// Replaces the choices (and the plan's variants) of the matmuls `latest` holds for `adapter`
/// with its own.
fn adopt_cached(
    latest: &CacheFile,
    adapter: &str,
    available: &[MatmulVariant],
    matmuls: &[(usize, MatmulOp, usize, LayerShape)],
    plan: &mut MatmulPlan,
    choices: &mut [Choice],
) {
    let Some(cached) = latest.adapters.get(adapter) else {
        return;
    };
    for (l, op, rows, shape) in matmuls {
        let key = matmul_key(*op, *rows, shape);
        let Some(entry) = cached.get(&key) else {
            continue;
        };
        let Some(variant) =
            MatmulVariant::by_name(&entry.variant).filter(|v| available.contains(v) && v.fits(*op, shape))
        else {
            continue;
        };
        plan.layers[*l][*op as usize] = variant;
        if let Some(choice) = choices.iter_mut().find(|c| c.key == key) {
            choice.variant = variant;
            choice.seconds = entry.seconds;
        }
    }
}

/// Adds a choice unless its key is there already.
fn push_choice(
    choices: &mut Vec<Choice>,
    key: String,
    variant: MatmulVariant,
    seconds: f64,
    timings: Option<Vec<(MatmulVariant, f64)>>,
) {
    if !choices.iter().any(|c| c.key == key) {
        choices.push(Choice {
            key,
            variant,
            seconds,
            timings,
        });
    }
}

/// The kernels for a plan made without timing.
pub fn planned(ctx: &GpuContext, plan: MatmulPlan, source: PlanSource) -> Result<Tuned, GpuError> {
    Ok(Tuned {
        kernels: Kernels::for_plan(ctx, &plan)?,
        plan,
        report: TuneReport {
            source,
            choices: Vec::new(),
            seconds: 0.0,
            timed: 0,
            timestamps: false,
        },
    })
}

/// What [`tune`] has cached for each adapter, for `--list-devices`: (adapter key, [(matmul
/// key, variant)]). Reading it says nothing on stderr unless the file is unusable.
pub fn cached_choices(cache: &TuneCache) -> BTreeMap<String, BTreeMap<String, CachedChoice>> {
    cache.load().adapters
}

/// Buffers at the run's largest shapes, and one batch entry of the run's batch rows, to time
/// matmuls with. The values are harmless (0.25): the time does not depend on them.
struct Timer<'a> {
    ctx: &'a GpuContext,
    /// The run's kernels, with every candidate's pipeline compiled as it is first timed.
    kernels: Kernels,
    weights: wgpu::Buffer,
    left: wgpu::Buffer,
    right: wgpu::Buffer,
    out: wgpu::Buffer,
    tables: Vec<(usize, BatchTable)>,
    stamps: Option<Stamps>,
}

/// The device's clock around a timed pass, where it has timestamp queries: the pass writes a
/// timestamp as it begins and one as it ends; they are resolved into a buffer and read back.
struct Stamps {
    set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per tick (read natively only: the web never makes a `Stamps`).
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    period: f64,
}

impl Stamps {
    /// None where the device has no timestamp queries, or where a read-back cannot be waited
    /// for (the web: its waits return before the GPU is done).
    fn new(ctx: &GpuContext) -> Result<Option<Stamps>, GpuError> {
        if !cfg!(feature = "native") || !ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(None);
        }
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("tuning timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        Ok(Some(Stamps {
            set,
            resolved: ctx.buffer("tuning timestamps", 16, U::QUERY_RESOLVE | U::COPY_SRC)?,
            readback: ctx.buffer("tuning timestamps read-back", 16, U::MAP_READ | U::COPY_DST)?,
            period: ctx.queue.get_timestamp_period() as f64,
        }))
    }

    fn writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }
    }

    /// After the pass: resolves both timestamps and copies them where they can be read.
    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.set, 0..2, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, 16);
    }

    /// Seconds between the pass's two timestamps, once the submit is done; None if the clock
    /// did not move forward (a device whose timestamps mean nothing), so the wall clock stands.
    #[cfg(feature = "native")]
    fn seconds(&self, ctx: &GpuContext) -> Result<Option<f64>, GpuError> {
        let ticks: Vec<u64> = ctx.map_read(&self.readback, "reading the tuning timestamps")?;
        Ok((ticks[1] > ticks[0]).then(|| (ticks[1] - ticks[0]) as f64 * self.period * 1e-9))
    }

    #[cfg(not(feature = "native"))]
    fn seconds(&self, _: &GpuContext) -> Result<Option<f64>, GpuError> {
        Ok(None)
    }
}

/// Floats in the timer's activation buffers (the batch's rows × the widest layer) and in its
/// weight buffer (the largest layer's weights and biases).
fn timer_sizes(work: &Workload) -> (usize, usize) {
    let rows = work.batch_size.min(work.train.len()).max(1);
    let widest = work.spec.widths.iter().copied().max().unwrap_or(1);
    let largest_layer = work
        .spec
        .layout()
        .layers
        .iter()
        .map(|s| (s.inputs + 1) * s.outputs)
        .max()
        .unwrap_or(1);
    (rows * widest, largest_layer)
}

impl<'a> Timer<'a> {
    /// Whether a buffer of the timer would exceed the device's limits.
    fn too_large(ctx: &GpuContext, work: &Workload) -> bool {
        let (activations, largest_layer) = timer_sizes(work);
        let bytes = 4 * activations.max(largest_layer) as u64;
        ctx.check_binding_size("tuning", bytes).is_err()
    }

    fn new(ctx: &'a GpuContext, kernels: Kernels, work: &Workload) -> Result<Timer<'a>, GpuError> {
        let (activations, largest_layer) = timer_sizes(work);
        let filled = |label: &str, len: usize| ctx.storage_with(label, &vec![0.25f32; len.max(4)], U::empty());
        Ok(Timer {
            ctx,
            kernels,
            weights: filled("tuning weights", largest_layer)?,
            left: filled("tuning left", activations)?,
            right: filled("tuning right", activations)?,
            out: filled("tuning out", activations.max(largest_layer))?,
            tables: Vec::new(),
            stamps: Stamps::new(ctx)?,
        })
    }

    /// Compiles the pipelines of `op` for those of `candidates` not compiled yet, and runs each
    /// new one once on a 1 × 4 × 4 product (a shape every variant fits), in one submit: a driver
    /// that compiles at first use (lavapipe) compiles them here, not inside a timing.
    fn compile(&mut self, op: MatmulOp, candidates: &[MatmulVariant]) -> Result<(), GpuError> {
        let ctx = self.ctx;
        let wanted: Vec<_> = candidates.iter().map(|&variant| (variant, op)).collect();
        let new = self.kernels.compile_matmuls(ctx, &wanted)?;
        if new.is_empty() {
            return Ok(());
        }
        let one = LayerShape {
            inputs: 4,
            outputs: 4,
            weight_offset: 0,
            bias_offset: 16,
        };
        let params = params_buffer(ctx, "tuning params", &MatmulParams::new(&one, Some(Activation::Relu)))?;
        let table = self.table(1)?;
        let matmul = &self.kernels.matmul;
        let group = matmul.bind(ctx, "tuning warm-up", &self.bindings(&params));
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("tuning warm-up"),
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("tuning warm-up"),
                timestamp_writes: None,
            });
            for (variant, op) in new {
                matmul.record(&mut pass, variant, op, &group, self.tables[table].1.entry(0), 1, &one);
            }
        }
        ctx.submit(encoder.finish());
        ctx.wait("compiling the matmul variants")
    }

    fn bindings<'b>(&'b self, params: &'b wgpu::Buffer) -> MatmulBindings<'b> {
        MatmulBindings {
            weights: &self.weights,
            left: &self.left,
            right: &self.right,
            out: &self.out,
            params,
        }
    }

    /// The index in `tables` of a one-entry batch table of `rows` rows (an evaluation entry: no
    /// dropout), made once.
    fn table(&mut self, rows: usize) -> Result<usize, GpuError> {
        if let Some(index) = self.tables.iter().position(|(r, _)| *r == rows) {
            return Ok(index);
        }
        let entry = BatchEntry::evaluation(0, rows, 0);
        let table = BatchTable::new(self.ctx, &self.kernels, &[entry], 1, &Dropout::NONE)?;
        self.tables.push((rows, table));
        Ok(self.tables.len() - 1)
    }

    /// Seconds per dispatch of `op` for `rows` through a layer of `shape`, for each candidate.
    fn time(
        &mut self,
        op: MatmulOp,
        rows: usize,
        shape: &LayerShape,
        candidates: &[MatmulVariant],
    ) -> Result<Vec<(MatmulVariant, f64)>, GpuError> {
        let ctx = self.ctx;
        let shape = LayerShape {
            inputs: shape.inputs,
            outputs: shape.outputs,
            weight_offset: 0,
            bias_offset: shape.inputs * shape.outputs,
        };
        self.compile(op, candidates)?;
        let table = self.table(rows)?;
        let activation = (op == MatmulOp::BackwardInput).then_some(Activation::Relu);
        let params = params_buffer(ctx, "tuning params", &MatmulParams::new(&shape, activation))?;
        let kernels = &self.kernels;
        let group = kernels.matmul.bind(ctx, "tuning", &self.bindings(&params));
        let table = &self.tables[table].1;
        let stamps = self.stamps.as_ref();
        let run = |variant: MatmulVariant, repeats: u32| -> Result<f64, GpuError> {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tuning") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("tuning"),
                    timestamp_writes: stamps.map(Stamps::writes),
                });
                for _ in 0..repeats {
                    kernels
                        .matmul
                        .record(&mut pass, variant, op, &group, table.entry(0), rows, &shape);
                }
            }
            if let Some(stamps) = stamps {
                stamps.resolve(&mut encoder);
            }
            let commands = encoder.finish();
            let started = Instant::now();
            ctx.submit(commands);
            ctx.wait("timing a matmul variant")?;
            let wall = started.elapsed().as_secs_f64();
            let device = match stamps {
                Some(stamps) => stamps.seconds(ctx)?,
                None => None,
            };
            Ok(device.unwrap_or(wall) / repeats as f64)
        };
        ctx.wait("preparing to time the matmuls")?;
        let mut timings = Vec::new();
        let mut best_first = f64::INFINITY;
        for &variant in candidates {
            // Compiled at warm-up: the first dispatch at this shape is a real time.
            let first = run(variant, 1)?;
            // Hopeless, or long enough to stand as its own timing.
            if first > HOPELESS * best_first || first >= TIMED_BUDGET {
                best_first = best_first.min(first);
                timings.push((variant, first));
                continue;
            }
            best_first = best_first.min(first);
            let repeats = ((TIMED_BUDGET / first.max(1e-6)) as u32).clamp(1, MAX_REPEATS);
            let seconds = run(variant, repeats)?;
            timings.push((variant, seconds));
        }
        Ok(timings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version names the crate's and the kernels' (8 hex digits of their CRC), and the
    /// kernels' part follows their sources: a variant compiled with other constants is another.
    #[test]
    fn the_version_names_the_kernels() {
        let (crate_version, kernels) = version().split_once('+').expect("crate+kernels");
        assert_eq!(crate_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(kernels.len(), 8);
        assert!(kernels.chars().all(|c| c.is_ascii_hexdigit()), "{kernels}");
        let text = |variant: MatmulVariant| variant.with_source(|source| source.text());
        assert_ne!(text(MatmulVariant::TILED_64), text(MatmulVariant::TILED_32));
    }
}
