//! Finding a GPU and opening it: instance → adapter → device, with every error turned into a
//! [`GpuError`] instead of wgpu's default (a panic).

use crate::error::GpuError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What kind of adapter runs the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    /// A real GPU (discrete, integrated or virtual).
    Hardware,
    /// A driver that runs "GPU" code on the CPU, such as Mesa's lavapipe (llvmpipe).
    Software,
}

/// One adapter wgpu can see, as `--list-devices` shows it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub kind: AdapterKind,
    /// What the tuning cache files its choices under (`tune::adapter_key`).
    pub tune_key: String,
}

fn kind_of(info: &wgpu::AdapterInfo) -> AdapterKind {
    match info.device_type {
        wgpu::DeviceType::Cpu => AdapterKind::Software,
        // Some drivers report llvmpipe as "Other".
        _ if info.name.to_lowercase().contains("llvmpipe") => AdapterKind::Software,
        _ => AdapterKind::Hardware,
    }
}

/// Hardware before software; among hardware, discrete before integrated.
fn preference(info: &wgpu::AdapterInfo) -> u8 {
    match (kind_of(info), info.device_type) {
        (AdapterKind::Hardware, wgpu::DeviceType::DiscreteGpu) => 0,
        (AdapterKind::Hardware, wgpu::DeviceType::IntegratedGpu) => 1,
        (AdapterKind::Hardware, _) => 2,
        (AdapterKind::Software, _) => 3,
    }
}

/// Gives Mesa a valid `XDG_RUNTIME_DIR` before the first Vulkan instance is created, so that it
/// never prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`
///
/// Why: Mesa's device-selection layer (`VK_LAYER_MESA_device_select`, installed with every Mesa
/// Vulkan driver, lavapipe included) asks the Wayland compositor which GPU it runs on whenever
/// the application enables `VK_KHR_wayland_surface`, as wgpu always does on Linux. libwayland
/// then prints that line on stderr when the variable is unset or not an absolute path — on
/// every headless server and in every CI job, though gpu-mlp never opens a window. Nothing in
/// wgpu's instance descriptor turns the extension or the layer off, so the environment is the
/// only lever.
///
/// What: when `XDG_RUNTIME_DIR` is unset or invalid — by the XDG base-directory rules, not an
/// absolute path to a directory owned by this user with mode 0700 — it is pointed at a private
/// directory of our own, `$TMPDIR/gpu-mlp-runtime-<uid>` (created with mode 0700; if that name
/// is taken by a symlink, by another user, or has looser permissions, a fresh
/// `gpu-mlp-runtime-<uid>-<pid>[-n]` is created instead). It stays empty: nothing listens there,
/// so the layer's connection attempt fails quietly and it falls back to its default choice.
/// A valid value is left alone. The directory is left in place for the next run, as a login
/// session's /run/user/<uid> is.
///
/// Soundness: changing the environment is only sound while no other thread reads it through
/// libc (Rust's own `std::env` readers take the same lock as `set_var`, so they are safe). This
/// runs once per process, behind a [`Once`](std::sync::Once), and every wgpu instance this crate
/// creates waits for it first ([`instance`] calls it), so no Mesa or Vulkan-loader code of ours
/// can be running yet when the variable changes. The binary calls it first thing in `main`,
/// while it has one thread. A library user who creates wgpu instances of their own on other
/// threads while the first gpu-mlp instance is being made could race it; such a user can call
/// this function first, or set a valid `XDG_RUNTIME_DIR`, in which case nothing is changed.
pub fn prepare_environment() {
    static PREPARED: std::sync::Once = std::sync::Once::new();
    PREPARED.call_once(runtime_dir::ensure_valid);
}

#[cfg(all(unix, not(target_os = "macos"), not(target_os = "ios")))]
mod runtime_dir {
    use std::fs::{self, DirBuilder};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    const VAR: &str = "XDG_RUNTIME_DIR";

    /// An absolute path to a directory that this user owns, mode 0700; with `follow_links`
    /// false, a symlink does not count.
    fn is_private(path: &Path, follow_links: bool) -> bool {
        if !path.is_absolute() {
            return false;
        }
        let metadata = if follow_links {
            fs::metadata(path)
        } else {
            fs::symlink_metadata(path)
        };
        match metadata {
            // SAFETY: geteuid has no preconditions and cannot fail.
            Ok(m) => m.is_dir() && m.uid() == unsafe { libc::geteuid() } && m.permissions().mode() & 0o077 == 0,
            Err(_) => false,
        }
    }

    /// Whether the current value is valid. A runtime directory given by a login session may be
    /// reached through a symlink; ours never is.
    fn current_is_valid() -> bool {
        std::env::var_os(VAR).is_some_and(|dir| is_private(Path::new(&dir), true))
    }

    /// Creates (or finds, already private) a directory of ours for the variable to point at.
    fn private_dir() -> Option<PathBuf> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let base = std::env::temp_dir().join(format!("gpu-mlp-runtime-{uid}"));
        let pid = std::process::id();
        let candidates = std::iter::once(base.clone())
            .chain(std::iter::once(PathBuf::from(format!("{}-{pid}", base.display()))))
            .chain((1..16).map(|n| PathBuf::from(format!("{}-{pid}-{n}", base.display()))));
        for dir in candidates {
            // mkdir fails rather than follow a symlink planted at the name.
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) if is_private(&dir, false) => return Some(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && is_private(&dir, false) => return Some(dir),
                _ => continue,
            }
        }
        None
    }

    pub(super) fn ensure_valid() {
        if current_is_valid() {
            return;
        }
        if let Some(dir) = private_dir() {
            // See `prepare_environment` for why this is sound here.
            std::env::set_var(VAR, dir);
        }
    }
}

/// Elsewhere (Windows, macOS) no Mesa Wayland code runs: nothing to prepare.
#[cfg(not(all(unix, not(target_os = "macos"), not(target_os = "ios"))))]
mod runtime_dir {
    pub(super) fn ensure_valid() {}
}

fn instance() -> wgpu::Instance {
    prepare_environment();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // Vulkan, Metal, DX12: the backends with full compute support.
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    wgpu::Instance::new(desc)
}

async fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    adapters.sort_by_key(|a| preference(&a.get_info()));
    adapters
}

/// Every adapter wgpu can see, best first.
#[cfg(feature = "native")]
pub fn list_adapters() -> Vec<AdapterSummary> {
    pollster::block_on(list_adapters_async())
}

/// [`list_adapters`], without blocking (on the web: the browser's WebGPU adapter, if any).
pub async fn list_adapters_async() -> Vec<AdapterSummary> {
    adapters(&instance())
        .await
        .iter()
        .map(|adapter| {
            let info = adapter.get_info();
            AdapterSummary {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                kind: kind_of(&info),
                tune_key: super::tune::adapter_key(&info),
            }
        })
        .collect()
}

/// True when a hardware GPU is present (what `--device auto` asks).
#[cfg(feature = "native")]
pub fn has_hardware_gpu() -> bool {
    list_adapters().iter().any(|a| a.kind == AdapterKind::Hardware)
}

/// Every point where the host meets the device: each submit goes through [`GpuContext::submit`],
/// each map through [`GpuContext::map_read`] and each wait through [`GpuContext::wait`], which
/// count them here (nothing else in the crate submits, maps or polls). Shared, so that a caller
/// keeps reading it after the context has moved into a backend.
#[derive(Debug, Default)]
pub struct SyncCounter {
    submits: AtomicU64,
    maps: AtomicU64,
    waits: AtomicU64,
}

/// What a [`SyncCounter`] has counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub submits: u64,
    pub maps: u64,
    pub waits: u64,
}

impl SyncCounter {
    pub fn counts(&self) -> SyncCounts {
        SyncCounts {
            submits: self.submits.load(Ordering::Relaxed),
            maps: self.maps.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }
}

impl SyncCounts {
    /// What was counted after `earlier`.
    pub fn since(self, earlier: SyncCounts) -> SyncCounts {
        SyncCounts {
            submits: self.submits - earlier.submits,
            maps: self.maps - earlier.maps,
            waits: self.waits - earlier.waits,
        }
    }
}

/// An open device, with the errors wgpu reports outside any error scope collected here.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub kind: AdapterKind,
    pub limits: wgpu::Limits,
    /// Errors raised outside an error scope (wgpu would otherwise panic on them).
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// Set when the device is lost.
    lost: Arc<Mutex<Option<String>>>,
    syncs: Arc<SyncCounter>,
}

impl GpuContext {
    /// Opens the best adapter: a hardware GPU if there is one, else a software one.
    /// Requests every limit the adapter offers (larger buffers, larger workgroups).
    #[cfg(feature = "native")]
    pub fn new() -> Result<GpuContext, GpuError> {
        GpuContext::with_limits(|_| {})
    }

    /// [`GpuContext::new`], requesting the adapter's limits as `adjust` leaves them: lower ones
    /// make the device behave as a smaller GPU would (what the tests of the limits use).
    #[cfg(feature = "native")]
    pub fn with_limits(adjust: impl FnOnce(&mut wgpu::Limits)) -> Result<GpuContext, GpuError> {
        pollster::block_on(GpuContext::open(adjust))
    }

    /// [`GpuContext::with_limits`], without blocking: what the web awaits.
    pub async fn open(adjust: impl FnOnce(&mut wgpu::Limits)) -> Result<GpuContext, GpuError> {
        let instance = instance();
        let adapter = adapters(&instance)
            .await
            .into_iter()
            .next()
            .ok_or(GpuError::NoAdapter)?;
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        adjust(&mut limits);
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("gpu-mlp"),
            // Where the adapter has them: subgroups (the subgroup matmul variants need them) and
            // timestamp queries (tuning times the variants by them).
            required_features: adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY),
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) = adapter
            .request_device(&descriptor)
            .await
            .map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            sink.lock().expect("error sink").push(error.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                *lost_sink.lock().expect("lost sink") = Some(format!("{reason:?}: {message}"));
            }
        });
        let kind = kind_of(&info);
        Ok(GpuContext {
            device,
            queue,
            info,
            kind,
            limits,
            uncaptured,
            lost,
            syncs: Arc::default(),
        })
    }

    /// The counter of this device's submits, maps and waits.
    pub fn sync_counter(&self) -> Arc<SyncCounter> {
        Arc::clone(&self.syncs)
    }

    /// Submits `commands` to the queue (counted).
    pub fn submit(&self, commands: wgpu::CommandBuffer) {
        self.syncs.submits.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([commands]);
    }

    /// "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Runs `f` inside a validation + out-of-memory error scope and turns what it caught into
    /// an error made by `describe` (which names the kernel or buffer).
    #[cfg(feature = "native")]
    pub fn scoped<T>(
        &self,
        f: impl FnOnce() -> T,
        describe: impl FnOnce(wgpu::Error) -> GpuError,
    ) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        match validation.or(oom) {
            Some(error) => Err(describe(error)),
            None => Ok(value),
        }
    }

    /// Without `native` (the web) a scope's result only comes back to a caller that awaits it,
    /// which these synchronous constructors cannot: `f` runs unscoped, and what it raises reaches
    /// the uncaptured-error handler, reported by the next [`GpuContext::check`] (every wait).
    #[cfg(not(feature = "native"))]
    pub fn scoped<T>(
        &self,
        f: impl FnOnce() -> T,
        _describe: impl FnOnce(wgpu::Error) -> GpuError,
    ) -> Result<T, GpuError> {
        Ok(f())
    }

    /// Fails if the device was lost or raised an error outside a scope since the last check.
    pub fn check(&self, context: &str) -> Result<(), GpuError> {
        if let Some(message) = self.lost.lock().expect("lost sink").clone() {
            return Err(GpuError::Lost {
                context: context.to_string(),
                message,
            });
        }
        let mut errors = self.uncaptured.lock().expect("error sink");
        if !errors.is_empty() {
            let message = errors.join("; ");
            errors.clear();
            return Err(GpuError::Device {
                context: context.to_string(),
                message,
            });
        }
        Ok(())
    }

    /// Waits until the GPU has finished everything submitted.
    pub fn wait(&self, context: &str) -> Result<(), GpuError> {
        self.syncs.waits.fetch_add(1, Ordering::Relaxed);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Device {
                context: context.to_string(),
                message: e.to_string(),
            })?;
        self.check(context)
    }

    /// A buffer of `size` bytes, with its allocation checked (out of memory names the buffer).
    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer, GpuError> {
        // wgpu rejects zero-sized bindings; 4 bytes is the smallest useful buffer.
        let size = size.max(4).next_multiple_of(4);
        self.scoped(
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            },
            |error| match error {
                wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory {
                    buffer: label.to_string(),
                    bytes: size,
                    message: error.to_string(),
                },
                other => GpuError::Device {
                    context: format!("creating buffer '{label}'"),
                    message: other.to_string(),
                },
            },
        )
    }

    /// A storage buffer holding `data`.
    pub fn storage_with<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, GpuError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.check_binding_size(label, bytes.len() as u64)?;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra;
        let buffer = self.buffer(label, bytes.len() as u64, usage)?;
        self.queue.write_buffer(&buffer, 0, bytes);
        Ok(buffer)
    }

    /// Refuses a storage binding larger than the device allows, saying by how much.
    pub fn check_binding_size(&self, label: &str, bytes: u64) -> Result<(), GpuError> {
        let limit = self.limits.max_storage_buffer_binding_size;
        let limit = limit.min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(GpuError::BufferTooLarge {
                buffer: label.to_string(),
                needed: bytes,
                limit,
                adapter: self.info.name.clone(),
                hint: "use a smaller --batch-size or narrower layers, or --device cpu".to_string(),
            });
        }
        Ok(())
    }

    /// Copies `buffer` (which must have COPY_SRC usage) back to the host: one readback.
    #[cfg(feature = "native")]
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, context: &str) -> Result<Vec<T>, GpuError> {
        pollster::block_on(self.read_async(buffer, context))
    }

    /// [`GpuContext::read`], without blocking.
    pub async fn read_async<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, context: &str) -> Result<Vec<T>, GpuError> {
        let size = buffer.size();
        let staging = self.buffer(
            "readback",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.submit(encoder.finish());
        self.map_read_async(&staging, context).await
    }

    /// Maps a MAP_READ buffer after the GPU is done with it and copies it out (counted).
    #[cfg(feature = "native")]
    pub fn map_read<T: bytemuck::Pod>(&self, staging: &wgpu::Buffer, context: &str) -> Result<Vec<T>, GpuError> {
        pollster::block_on(self.map_read_async(staging, context))
    }

    /// [`GpuContext::map_read`], without blocking. Natively the wait polls the device until the
    /// map is done, so the future is ready at once; on the web the wait returns at once (the
    /// browser polls) and the future resolves when the browser has mapped the buffer.
    pub async fn map_read_async<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        context: &str,
    ) -> Result<Vec<T>, GpuError> {
        self.syncs.maps.fetch_add(1, Ordering::Relaxed);
        let (sink, mapped) = callback::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| sink.send(r));
        self.wait(context)?;
        let mapped = mapped.await;
        self.check(context)?;
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(GpuError::Device {
                    context: context.to_string(),
                    message: e.to_string(),
                })
            }
            None => {
                return Err(GpuError::Device {
                    context: context.to_string(),
                    message: "the buffer was not mapped after waiting".into(),
                })
            }
        }
        let values = {
            let view = staging.get_mapped_range(..).map_err(|e| GpuError::Device {
                context: context.to_string(),
                message: e.to_string(),
            })?;
            bytemuck::cast_slice::<u8, T>(&view).to_vec()
        };
        staging.unmap();
        Ok(values)
    }
}

/// A one-shot channel from a wgpu callback to the future that awaits it (wgpu calls a map's
/// callback from `poll` natively, from the browser's event loop on the web).
mod callback {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    type Slot<T> = Arc<Mutex<(Option<T>, Option<Waker>)>>;

    pub struct Sender<T>(Slot<T>);
    pub struct Receiver<T>(Slot<T>);

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let slot: Slot<T> = Arc::new(Mutex::new((None, None)));
        (Sender(slot.clone()), Receiver(slot))
    }

    impl<T> Sender<T> {
        pub fn send(self, value: T) {
            let mut slot = self.0.lock().expect("callback slot");
            slot.0 = Some(value);
            if let Some(waker) = slot.1.take() {
                waker.wake();
            }
        }
    }

    /// Resolves to `None` if the callback was dropped without being called.
    impl<T> Future for Receiver<T> {
        type Output = Option<T>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let mut slot = self.0.lock().expect("callback slot");
            if let Some(value) = slot.0.take() {
                return Poll::Ready(Some(value));
            }
            if Arc::strong_count(&self.0) == 1 {
                return Poll::Ready(None);
            }
            slot.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}
