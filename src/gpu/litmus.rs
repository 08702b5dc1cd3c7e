//! The resident-mode litmus: before SRAM mode keeps workgroups alive across
//! a whole generation (each waiting on others of the same dispatch), two
//! short measurements on the adapter decide whether that is safe
//! (`shaders/litmus.wgsl`):
//!
//! * **message passing** through a reused slot between two workgroups, many
//!   rounds, without and (where the adapter has MEMORY_DECORATION_COHERENT)
//!   with `@coherent`, counting the words the reader saw stale;
//! * **co-residency**: how many workgroups of the interpreter's size and
//!   workgroup-memory footprint run at once (each arrives at a counter and
//!   waits for all the others; the largest count that completes, found by
//!   doubling then bisecting).
//!
//! Every wait in both is bounded (a poll limit, then an error flag), so the
//! litmus ends on adapters where it fails (lavapipe runs only as many
//! workgroups at once as it has threads). The result is cached per adapter,
//! driver and footprint in a JSON file under the user's cache directory
//! (`SRAMLM_CACHE_DIR`, else `$XDG_CACHE_HOME/sramlm`, else
//! `~/.cache/sramlm`) and printed by `sramlm info`.

use super::{Gpu, GpuError, Shader, ShaderVariant};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Rounds of message passing per variant.
pub const ROUNDS: u32 = 1000;
/// Polls a waiting workgroup may spend without progress (message passing).
pub const MP_SPIN: u32 = 1 << 22;
/// The same for the co-residency probe (a failing probe costs about this).
pub const CORES_SPIN: u32 = 1 << 20;
/// The largest workgroup count the co-residency probe tries.
pub const MAX_PROBE: u32 = 8192;
/// Time after which the co-residency search stops (keeping what it proved).
pub const SEARCH_BUDGET: Duration = Duration::from_secs(20);
/// Words of the slot (`SLOT` in the WGSL).
const SLOT_WORDS: u64 = 1024;
/// Cache file format version; entries of another version are re-measured.
pub const CACHE_VERSION: u32 = 1;
/// Cache file name inside the cache directory.
pub const CACHE_FILE: &str = "litmus.json";

/// One message-passing variant's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePassing {
    pub rounds: u32,
    pub completed_rounds: u32,
    /// A wait hit its poll limit (the two workgroups did not run at once).
    pub timed_out: bool,
    /// Words the reader saw that were not the round's value.
    pub stale_words: u64,
}

impl MessagePassing {
    pub fn clean(&self) -> bool {
        !self.timed_out && self.completed_rounds == self.rounds && self.stale_words == 0
    }
    fn describe(&self) -> String {
        if self.timed_out || self.completed_rounds < self.rounds {
            format!(
                "did not complete ({} of {} rounds; a wait timed out)",
                self.completed_rounds, self.rounds
            )
        } else {
            format!("{} stale words in {} rounds", self.stale_words, self.rounds)
        }
    }
}

/// The litmus result for one adapter, driver and workgroup footprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Litmus {
    pub version: u32,
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Workgroup memory of each probe workgroup (the interpreter's).
    pub footprint_bytes: u32,
    /// The adapter has MEMORY_DECORATION_COHERENT.
    pub coherent_feature: bool,
    pub plain: MessagePassing,
    /// `None` without the feature.
    pub coherent: Option<MessagePassing>,
    /// The largest number of workgroups that ran at once (0: not even one
    /// completed), and the cap the search stopped at.
    pub co_resident: u32,
    pub probe_cap: u32,
    pub probes: u32,
    /// Resident mode may run here; if not, why (measured).
    pub admitted: bool,
    pub reason: String,
}

impl Litmus {
    /// Workgroups resident mode may keep alive at once (0 if refused).
    pub fn capacity(&self) -> u32 {
        if self.admitted {
            self.co_resident
        } else {
            0
        }
    }

    /// One line for `sramlm info` and notices.
    pub fn summary(&self) -> String {
        let mp = match &self.coherent {
            Some(c) => format!(
                "message passing: plain {}, @coherent {}",
                self.plain.describe(),
                c.describe()
            ),
            None => format!(
                "message passing: plain {} (no @coherent feature)",
                self.plain.describe()
            ),
        };
        format!(
            "resident mode {}: {mp}; {} co-resident workgroups of {} bytes (searched up to {})",
            if self.admitted { "admitted" } else { "refused" },
            self.co_resident,
            self.footprint_bytes,
            self.probe_cap,
        )
    }

    fn same_key(&self, other: &Litmus) -> bool {
        self.adapter == other.adapter
            && self.backend == other.backend
            && self.driver == other.driver
            && self.driver_info == other.driver_info
            && self.footprint_bytes == other.footprint_bytes
            && self.version == other.version
    }
}

/// The admission rule on measured figures: message passing must be clean in
/// the variant resident mode would use (`@coherent` where the adapter has it;
/// a GPU without it is refused, as SRAM mode itself is), and at least two
/// workgroups must run at once (one resident slice and one worker).
pub fn decide(
    device_type: &str,
    coherent_feature: bool,
    plain: &MessagePassing,
    coherent: Option<&MessagePassing>,
    co_resident: u32,
) -> (bool, String) {
    let is_cpu = device_type == format!("{:?}", wgpu::DeviceType::Cpu);
    let used = match coherent {
        Some(c) => c,
        None if !is_cpu || coherent_feature => {
            return (
                false,
                "no @coherent storage (MEMORY_DECORATION_COHERENT) on a GPU: handed-over data can be stale".into(),
            )
        }
        None => plain,
    };
    let which = if coherent.is_some() {
        "@coherent"
    } else {
        "plain"
    };
    if used.timed_out || used.completed_rounds < used.rounds {
        return (
            false,
            format!(
                "message passing between two workgroups ({which}) {}: they did not run at once",
                used.describe()
            ),
        );
    }
    if used.stale_words > 0 {
        return (
            false,
            format!(
                "message passing through a reused slot ({which}) read {} stale words in {} rounds",
                used.stale_words, used.rounds
            ),
        );
    }
    if co_resident < 2 {
        return (
            false,
            format!("only {co_resident} workgroup(s) ran at once; resident mode needs 2 (a resident slice and a worker)"),
        );
    }
    (
        true,
        format!("message passing clean ({which}), {co_resident} workgroups run at once"),
    )
}

/// The `cores` variant for a footprint of `footprint_bytes` (a multiple of
/// 16, at least 32): its workgroup memory is exactly that.
pub fn cores_variant(footprint_bytes: u32) -> ShaderVariant {
    let words = (footprint_bytes.max(32) / 16 * 16 - 16) / 4;
    ShaderVariant::new("cores")
        .define("CORES")
        .define(format!("W_WORDS={words}"))
}

/// The message-passing variant.
pub fn mp_variant(coherent: bool) -> ShaderVariant {
    let v = ShaderVariant::new("mp");
    if coherent {
        v.define("COHERENT")
    } else {
        v
    }
}

/// Every variant (for the GPU-free shader checks).
pub fn variants() -> Vec<(Shader, ShaderVariant)> {
    vec![
        (Shader::Litmus, mp_variant(false)),
        (Shader::Litmus, mp_variant(true)),
        (Shader::Litmus, cores_variant(4096)),
    ]
}

/// Dispatches `groups` workgroups of `v` over the flags, the parameters and
/// (message passing) the slot; returns the flags.
fn dispatch(
    gpu: &Gpu,
    v: &ShaderVariant,
    params: [u32; 4],
    groups: u32,
) -> Result<Vec<u32>, GpuError> {
    let pipe = gpu.pipeline(Shader::Litmus, v)?;
    let flags = gpu.storage_buffer("litmus.flags", 8 * 4)?;
    let p = gpu.upload("litmus.params", bytemuck::cast_slice(&params))?;
    let slot = gpu.storage_buffer("litmus.slot", SLOT_WORDS * 4)?;
    let mut entries = vec![
        wgpu::BindGroupEntry {
            binding: 0,
            resource: flags.as_entire_binding(),
        },
        wgpu::BindGroupEntry {
            binding: 1,
            resource: p.as_entire_binding(),
        },
    ];
    if v.entry == "mp" {
        entries.push(wgpu::BindGroupEntry {
            binding: 2,
            resource: slot.as_entire_binding(),
        });
    }
    let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("litmus"),
        layout: &pipe.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut e = gpu.device.create_command_encoder(&Default::default());
    e.clear_buffer(&flags, 0, None);
    e.clear_buffer(&slot, 0, None);
    {
        let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("litmus"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipe);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups, 1, 1);
    }
    gpu.queue.submit([e.finish()]);
    let bytes = gpu.read_storage(&flags, 8 * 4)?;
    Ok(bytemuck::cast_slice(&bytes).to_vec())
}

/// Message passing between two workgroups, `rounds` rounds.
pub fn message_passing(
    gpu: &Gpu,
    coherent: bool,
    rounds: u32,
    spin: u32,
) -> Result<MessagePassing, GpuError> {
    let f = dispatch(gpu, &mp_variant(coherent), [rounds, spin, 2, 0], 2)?;
    Ok(MessagePassing {
        rounds,
        completed_rounds: f[4],
        timed_out: f[0] != 0,
        stale_words: f[1] as u64,
    })
}

/// Whether `n` workgroups of `footprint_bytes` all ran at once.
pub fn co_resident(gpu: &Gpu, n: u32, footprint_bytes: u32, spin: u32) -> Result<bool, GpuError> {
    co_resident_expecting(gpu, n, n, footprint_bytes, spin)
}

/// The probe with `n` workgroups each waiting for `expect` arrivals (tests:
/// more than `n` can never be met, so every wait must end at its limit).
pub fn co_resident_expecting(
    gpu: &Gpu,
    n: u32,
    expect: u32,
    footprint_bytes: u32,
    spin: u32,
) -> Result<bool, GpuError> {
    co_resident_strided(gpu, n, expect, 1, footprint_bytes, spin)
}

/// The probe over `n` workgroups of which every `stride`-th takes part
/// (the others end at once), each waiting for `expect` arrivals.
pub fn co_resident_strided(
    gpu: &Gpu,
    n: u32,
    expect: u32,
    stride: u32,
    footprint_bytes: u32,
    spin: u32,
) -> Result<bool, GpuError> {
    let f = dispatch(
        gpu,
        &cores_variant(footprint_bytes),
        [0, spin, expect, stride],
        n,
    )?;
    Ok(f[0] == 0 && f[2] == expect && f[5] == expect)
}

/// The largest workgroup count up to `cap` that passes the co-residency
/// probe (doubling, then bisecting; stops early after [`SEARCH_BUDGET`],
/// keeping the largest count proved). Returns (count, probes run).
pub fn search_co_resident(
    gpu: &Gpu,
    footprint_bytes: u32,
    cap: u32,
    spin: u32,
) -> Result<(u32, u32), GpuError> {
    let start = Instant::now();
    let mut probes = 0;
    let mut probe = |n: u32| -> Result<bool, GpuError> {
        probes += 1;
        co_resident(gpu, n, footprint_bytes, spin)
    };
    if cap == 0 || !probe(1)? {
        return Ok((0, probes));
    }
    let mut lo = 1u32;
    let mut hi = None;
    while lo < cap && start.elapsed() < SEARCH_BUDGET {
        let n = (lo * 2).min(cap);
        if probe(n)? {
            lo = n;
        } else {
            hi = Some(n);
            break;
        }
    }
    if let Some(mut hi) = hi {
        while hi - lo > 1 && start.elapsed() < SEARCH_BUDGET {
            let mid = lo + (hi - lo) / 2;
            if probe(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok((lo, probes))
}

/// Runs the whole litmus on `gpu` for workgroups of `footprint_bytes`.
pub fn measure(gpu: &Gpu, footprint_bytes: u32) -> Result<Litmus, GpuError> {
    let plain = message_passing(gpu, false, ROUNDS, MP_SPIN)?;
    let coherent = if gpu.level.coherent {
        Some(message_passing(gpu, true, ROUNDS, MP_SPIN)?)
    } else {
        None
    };
    let cap = MAX_PROBE;
    let (co, probes) = search_co_resident(gpu, footprint_bytes, cap, CORES_SPIN)?;
    let device_type = format!("{:?}", gpu.info.device_type);
    let (admitted, reason) = decide(
        &device_type,
        gpu.level.coherent,
        &plain,
        coherent.as_ref(),
        co,
    );
    Ok(Litmus {
        version: CACHE_VERSION,
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        device_type,
        driver: gpu.info.driver.clone(),
        driver_info: gpu.info.driver_info.clone(),
        footprint_bytes,
        coherent_feature: gpu.level.coherent,
        plain,
        coherent,
        co_resident: co,
        probe_cap: cap,
        probes,
        admitted,
        reason,
    })
}

/// The cache directory: `SRAMLM_CACHE_DIR`, else `$XDG_CACHE_HOME/sramlm`,
/// else `$HOME/.cache/sramlm` (`None` if none is set).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("SRAMLM_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("sramlm"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache").join("sramlm"))
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    version: u32,
    entries: Vec<Litmus>,
}

/// The entries of the cache file at `path`: empty if it is missing; an
/// error line (never a panic) if it cannot be read or parsed.
pub fn read_cache(path: &Path) -> Result<Vec<Litmus>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() > 16 << 20 {
        return Err(format!("{} is larger than 16 MiB", path.display()));
    }
    let f: CacheFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a litmus cache: {e}", path.display()))?;
    Ok(f.entries
        .into_iter()
        .filter(|e| e.version == CACHE_VERSION)
        .collect())
}

/// Writes `entry` into the cache file at `path` (replacing the entry with
/// the same adapter, driver and footprint; a corrupt file is replaced),
/// through a temporary file and a rename.
pub fn write_cache(path: &Path, entry: &Litmus) -> Result<(), String> {
    let mut entries = read_cache(path).unwrap_or_default();
    entries.retain(|e| !e.same_key(entry));
    entries.push(entry.clone());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&CacheFile {
        version: CACHE_VERSION,
        entries,
    })
    .map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot replace {}: {e}", path.display())
    })
}

/// Where a litmus result came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    /// Measured now; the note says why the cache was not used or not
    /// written (`None`: stored).
    Measured(Option<String>),
}

fn matches(e: &Litmus, gpu: &Gpu, footprint_bytes: u32) -> bool {
    e.adapter == gpu.info.name
        && e.backend == format!("{:?}", gpu.info.backend)
        && e.driver == gpu.info.driver
        && e.driver_info == gpu.info.driver_info
        && e.footprint_bytes == footprint_bytes
}

/// The cached result in the user's cache ([`cache_dir`]), or a fresh
/// measurement stored there.
pub fn cached_or_measure(gpu: &Gpu, footprint_bytes: u32) -> Result<(Litmus, Source), GpuError> {
    let path = cache_dir().map(|d| d.join(CACHE_FILE));
    cached_or_measure_at(gpu, footprint_bytes, path.as_deref())
}

/// [`cached_or_measure`] with the cache file at `path` (`None`: no cache).
/// A corrupt or unreadable cache is re-measured and replaced; one that
/// cannot be written is noted, never fatal.
pub fn cached_or_measure_at(
    gpu: &Gpu,
    footprint_bytes: u32,
    path: Option<&Path>,
) -> Result<(Litmus, Source), GpuError> {
    let mut note = None;
    if let Some(p) = path {
        match read_cache(p) {
            Ok(entries) => {
                if let Some(l) = entries
                    .into_iter()
                    .find(|e| matches(e, gpu, footprint_bytes))
                {
                    return Ok((l, Source::Cache));
                }
            }
            Err(e) => note = Some(format!("{e}; re-measured")),
        }
    }
    let l = measure(gpu, footprint_bytes)?;
    match path {
        Some(p) => {
            if let Err(e) = write_cache(p, &l) {
                note = Some(e);
            }
        }
        None => note = Some("no cache directory (set SRAMLM_CACHE_DIR or HOME)".into()),
    }
    Ok((l, Source::Measured(note)))
}

/// Every cached entry (for `sramlm info`), or the reason there are none.
pub fn all_cached() -> Result<Vec<Litmus>, String> {
    let dir = cache_dir().ok_or("no cache directory (set SRAMLM_CACHE_DIR or HOME)")?;
    read_cache(&dir.join(CACHE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(rounds: u32, done: u32, timed_out: bool, stale: u64) -> MessagePassing {
        MessagePassing {
            rounds,
            completed_rounds: done,
            timed_out,
            stale_words: stale,
        }
    }

    #[test]
    fn the_admission_rule() {
        let ok = mp(10, 10, false, 0);
        let stale = mp(10, 10, false, 3);
        let hung = mp(10, 4, true, 0);
        // A CPU adapter with the feature, two at once: admitted.
        let (a, why) = decide("Cpu", true, &stale, Some(&ok), 2);
        assert!(a, "{why}");
        // Stale through the slot in the variant used: refused, naming it.
        let (a, why) = decide("DiscreteGpu", true, &ok, Some(&stale), 100);
        assert!(!a && why.contains("3 stale words"), "{why}");
        // A GPU without the feature: refused even when the plain run was clean.
        let (a, why) = decide("DiscreteGpu", false, &ok, None, 100);
        assert!(!a && why.contains("coherent"), "{why}");
        // A CPU adapter without the feature uses the plain variant.
        assert!(decide("Cpu", false, &ok, None, 2).0);
        // Waits that timed out, or a single workgroup at once: refused.
        let (a, why) = decide("Cpu", true, &ok, Some(&hung), 8);
        assert!(!a && why.contains("did not run at once"), "{why}");
        let (a, why) = decide("Cpu", true, &ok, Some(&ok), 1);
        assert!(!a && why.contains("only 1"), "{why}");
    }

    #[test]
    fn the_probe_footprint_is_the_one_asked_for() {
        for f in [32u32, 4096, 16384, 65536] {
            let v = cores_variant(f);
            let src = Shader::Litmus.source(&v);
            crate::gpu::shader::validate(&src).unwrap();
            assert_eq!(
                crate::gpu::shader::workgroup_bytes(&src, &v).unwrap(),
                f as u64
            );
        }
        for c in [false, true] {
            let v = mp_variant(c);
            let src = Shader::Litmus.source(&v);
            crate::gpu::shader::validate(&src).unwrap();
            assert_eq!(src.contains("@coherent var"), c);
        }
    }
}
