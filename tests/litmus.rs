//! The resident-mode litmus on the test adapter: it ends in bounded time
//! (every wait is bounded, even where workgroups cannot wait on each other),
//! its result round-trips through the cache, and a corrupt cache file is
//! re-measured and replaced, never a panic.

use sramlm::gpu::litmus::{self, Source};
use sramlm::testing::gpu;
use std::time::Instant;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sramlm-litmus-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn litmus_ends_caches_and_survives_a_corrupt_cache() {
    let Some(gpu) = gpu() else { return };
    let footprint = 16384;
    let dir = temp_dir("cache");
    let path = dir.join(litmus::CACHE_FILE);

    let t = Instant::now();
    let (l, src) = litmus::cached_or_measure_at(&gpu, footprint, Some(&path)).unwrap();
    eprintln!(
        "litmus on {} in {:.2?}: {} ({})",
        gpu.describe(),
        t.elapsed(),
        l.summary(),
        l.reason
    );
    assert_eq!(src, Source::Measured(None));
    assert_eq!(l.footprint_bytes, footprint);
    assert_eq!(l.coherent_feature, gpu.level.coherent);
    assert_eq!(l.coherent.is_some(), gpu.level.coherent);
    assert_eq!(l.plain.rounds, litmus::ROUNDS);
    // One workgroup always runs; the search stays under its cap.
    assert!(l.co_resident >= 1 && l.co_resident <= l.probe_cap, "{l:?}");
    assert!(l.probes >= 1);
    // The decision is the rule applied to what was measured.
    let (admitted, reason) = litmus::decide(
        &l.device_type,
        l.coherent_feature,
        &l.plain,
        l.coherent.as_ref(),
        l.co_resident,
    );
    assert_eq!((admitted, reason.clone()), (l.admitted, l.reason.clone()));
    // The count the search found passes the probe again, and one more than
    // it fails (unless the search stopped at its cap).
    assert!(litmus::co_resident(&gpu, l.co_resident, footprint, litmus::CORES_SPIN).unwrap());
    if l.co_resident < l.probe_cap {
        let t = Instant::now();
        assert!(
            !litmus::co_resident(&gpu, l.co_resident + 1, footprint, litmus::CORES_SPIN).unwrap(),
            "{} workgroups ran at once but the search found {}",
            l.co_resident + 1,
            l.co_resident
        );
        eprintln!("a failing probe ended in {:.2?}", t.elapsed());
    }

    // Second use: from the cache, identical.
    let (again, src) = litmus::cached_or_measure_at(&gpu, footprint, Some(&path)).unwrap();
    assert_eq!(src, Source::Cache);
    assert_eq!(again, l);
    assert_eq!(litmus::read_cache(&path).unwrap(), vec![l.clone()]);

    // Another footprint is another entry; the first one stays.
    let mut other = l.clone();
    other.footprint_bytes = 4096;
    litmus::write_cache(&path, &other).unwrap();
    assert_eq!(litmus::read_cache(&path).unwrap().len(), 2);

    // A corrupt file: an error line from the reader, re-measured and replaced.
    for junk in [
        &b"{ not json"[..],
        b"",
        b"{\"version\":1,\"entries\":[{\"adapter\":7}]}",
        &[0xff, 0xfe, 0, 1],
    ] {
        std::fs::write(&path, junk).unwrap();
        let e = litmus::read_cache(&path).unwrap_err();
        assert!(e.contains("not a litmus cache"), "{e}");
        let (m, src) = litmus::cached_or_measure_at(&gpu, 4096, Some(&path)).unwrap();
        assert!(
            matches!(&src, Source::Measured(Some(n)) if n.contains("re-measured")),
            "{src:?}"
        );
        assert_eq!(m.footprint_bytes, 4096);
        assert_eq!(litmus::read_cache(&path).unwrap(), vec![m]);
    }
    // A cache that cannot be written (its directory is a file): measured,
    // noted, not fatal.
    let blocked = dir.join("file");
    std::fs::write(&blocked, b"x").unwrap();
    let (_, src) =
        litmus::cached_or_measure_at(&gpu, footprint, Some(&blocked.join("litmus.json"))).unwrap();
    assert!(matches!(src, Source::Measured(Some(_))), "{src:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wait_that_cannot_be_met_ends_with_the_flag() {
    let Some(gpu) = gpu() else { return };
    // Two workgroups waiting for three arrivals: every wait must end at its
    // poll limit with the error flag, and the dispatch must end.
    let t = Instant::now();
    assert!(!litmus::co_resident_expecting(&gpu, 2, 3, 16384, 1 << 16).unwrap());
    eprintln!("an unmeetable wait ended in {:.2?}", t.elapsed());
}
