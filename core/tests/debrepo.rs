//! dk-reprepro's core against real parts: Debian's reprepro, `.deb` files built
//! here by `dpkg-deb --build`, inotify and directory scans, the embedded broker
//! (and RabbitMQ when DK_TEST_RABBITMQ names it).
//!
//! Without reprepro installed these tests say so and pass, unless
//! DK_REQUIRE_BROKERS=1 (set by ./scripts/test, whose deps.sh installs it).

mod common;

use common::targets::{recv, Kind, Target};
use deploykit::aptwatch::{self, AptWatchConfig, WatchEvent};
use deploykit::debrepo::{self, RepoEvent, RepreproConfig, RepreproHandle};
use deploykit::message::{decode, Message, Package, PackageAction};
use deploykit::stomp::SubscribeOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(30);

/// Whether reprepro is here; a missing one fails the full suite.
fn have_reprepro() -> bool {
    if Command::new("reprepro").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("DK_REQUIRE_BROKERS").as_deref() == Ok("1") {
        panic!("reprepro is not installed but DK_REQUIRE_BROKERS=1: scripts/lib/deps.sh installs it");
    }
    eprintln!("note: reprepro not installed; dk-reprepro test skipped (./scripts/test installs it)");
    false
}

/// A temporary repository: reprepro base (bookworm, amd64, main), incoming dir, spool, work dir.
struct Repo {
    root: PathBuf,
}

impl Repo {
    fn new(tag: &str) -> Repo {
        let root = std::env::temp_dir().join(format!("dk-debrepo-{tag}-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(root.join("base/conf")).unwrap();
        std::fs::write(root.join("base/conf/distributions"), "Codename: bookworm\nArchitectures: amd64\nComponents: main\n").unwrap();
        for d in ["incoming", "work"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Repo { root }
    }

    fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }

    fn config(&self, watch: &str, extra: &str) -> RepreproConfig {
        let text = format!(
            "base = {:?}\nspool_dir = {:?}\nwatch = {watch:?}\nsettle = \"300ms\"\npoll_interval = \"200ms\"\ntimeout = \"60s\"\n{extra}\n[dists.bookworm]\nincoming = {:?}\n",
            self.root.join("base"),
            self.root.join("spool"),
            self.incoming()
        );
        RepreproConfig::parse(&text).unwrap()
    }

    /// Builds NAME_VERSION_ARCH.deb in the work dir with `payload` incompressible bytes.
    fn deb(&self, name: &str, version: &str, arch: &str, payload: usize) -> PathBuf {
        let tree = self.root.join("work").join(format!("{name}-{version}-{arch}"));
        std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(tree.join(format!("usr/share/{name}"))).unwrap();
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!("Package: {name}\nVersion: {version}\nArchitecture: {arch}\nSection: misc\nPriority: optional\nMaintainer: Test <test@example.invalid>\nDescription: deploykit test package\n"),
        )
        .unwrap();
        let bytes: Vec<u8> = (0..payload).map(|_| fastrand::u8(..)).collect();
        std::fs::write(tree.join(format!("usr/share/{name}/payload.bin")), bytes).unwrap();
        let out = self.root.join("work").join(format!("{name}_{version}_{arch}.deb"));
        let st = Command::new("dpkg-deb").args(["--root-owner-group", "-Zgzip", "--build"]).arg(&tree).arg(&out).output().unwrap();
        assert!(st.status.success(), "dpkg-deb --build: {}", String::from_utf8_lossy(&st.stderr));
        out
    }

    /// Copies a built .deb into incoming the way an uploader would (hidden temp name, then rename).
    fn drop_in(&self, deb: &Path) -> PathBuf {
        let name = deb.file_name().unwrap().to_str().unwrap();
        let tmp = self.incoming().join(format!(".{name}.XyZ123"));
        std::fs::copy(deb, &tmp).unwrap();
        let dest = self.incoming().join(name);
        std::fs::rename(&tmp, &dest).unwrap();
        dest
    }

    /// `reprepro list bookworm`.
    fn list(&self) -> String {
        let out = Command::new("reprepro").arg("-b").arg(self.root.join("base")).args(["list", "bookworm"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The next Done/Stuck event for `file_name` (other files' events are skipped), or a panic after WAIT.
async fn done_for(events: &mut broadcast::Receiver<RepoEvent>, file_name: &str) -> (Package, Option<PathBuf>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv()).await.unwrap_or_else(|_| panic!("no outcome for {file_name} within {WAIT:?}")).expect("daemon alive");
        match ev {
            RepoEvent::Done { package, moved_to } if package.file == file_name => return (package, Some(moved_to)),
            RepoEvent::Stuck { package, error } if package.file == file_name => panic!("{file_name} stuck: {error}"),
            RepoEvent::Retry { file, error } if file.ends_with(file_name) => panic!("{file_name} retried: {error}"),
            _ => {}
        }
    }
}

async fn start(target: &Target, config: RepreproConfig) -> RepreproHandle {
    debrepo::start(config, Some(target.client().await)).await.expect("daemon starts")
}

#[tokio::test]
async fn a_dropped_deb_is_included_archived_and_announced() {
    if !have_reprepro() {
        return;
    }
    let target = Target::embedded().await;
    let repo = Repo::new("include");
    let (ptopic, etopic) = (target.dest("topic"), target.dest("topic"));
    let listener = target.client().await;
    let mut packages = listener.subscribe(&ptopic, SubscribeOptions::default()).await.unwrap();
    let mut events = listener.subscribe(&etopic, SubscribeOptions::default()).await.unwrap();
    let config = repo.config("inotify", &format!("packages_topic = {ptopic:?}\nevents_topic = {etopic:?}"));
    let daemon = start(&target, config).await;
    assert!(daemon.inotify());
    let mut obs = daemon.subscribe();

    repo.drop_in(&repo.deb("site-assets", "1.4.2-1", "amd64", 4096));
    let (pkg, moved) = done_for(&mut obs, "site-assets_1.4.2-1_amd64.deb").await;
    assert_eq!(pkg.action, PackageAction::Added, "{pkg:?}");
    assert_eq!(moved.unwrap(), repo.incoming().join("archive/site-assets_1.4.2-1_amd64.deb"));
    assert!(!repo.incoming().join("site-assets_1.4.2-1_amd64.deb").exists());
    assert!(repo.list().contains("bookworm|main|amd64: site-assets 1.4.2-1"), "{}", repo.list());

    let m = recv(&mut packages).await;
    let Ok(Message::Package(p)) = decode(m.destination(), &m.headers, &m.body) else { panic!("not a package message: {:?}", m.text()) };
    assert_eq!((p.name.as_str(), p.version.as_str(), p.arch.as_str(), p.distro.as_str()), ("site-assets", "1.4.2-1", "amd64", "bookworm"));
    assert_eq!((p.action, p.file.as_str()), (PackageAction::Added, "site-assets_1.4.2-1_amd64.deb"));
    let m = recv(&mut events).await;
    let Ok(Message::Event(e)) = decode(m.destination(), &m.headers, &m.body) else { panic!("not an event: {:?}", m.text()) };
    assert_eq!(e.text, "Package site-assets_1.4.2-1_amd64.deb / bookworm added to repository.");
    assert_eq!(e.source, "repository");
    assert_eq!(daemon.shutdown().await.added, 1);
}

#[tokio::test]
async fn broken_debs_land_in_failed_with_the_error_beside_them() {
    if !have_reprepro() {
        return;
    }
    let target = Target::embedded().await;
    let repo = Repo::new("broken");
    let daemon = start(&target, repo.config("auto", "")).await;
    let mut obs = daemon.subscribe();

    // Not a Debian archive at all: refused by the control-data reader.
    std::fs::write(repo.incoming().join("junk_1.0_amd64.deb"), b"this is not an ar archive\n").unwrap();
    let (pkg, moved) = done_for(&mut obs, "junk_1.0_amd64.deb").await;
    assert_eq!(pkg.action, PackageAction::Failed);
    let moved = moved.unwrap();
    assert_eq!(moved, repo.incoming().join("failed/junk_1.0_amd64.deb"));
    let error = std::fs::read_to_string(repo.incoming().join("failed/junk_1.0_amd64.deb.error")).unwrap();
    assert!(error.contains("not a readable .deb"), "{error}");

    // A real .deb reprepro refuses (architecture not in conf/distributions): reprepro's own words.
    repo.drop_in(&repo.deb("armonly", "2.0", "arm64", 100));
    let (pkg, _) = done_for(&mut obs, "armonly_2.0_arm64.deb").await;
    assert_eq!((pkg.action, pkg.name.as_str(), pkg.arch.as_str()), (PackageAction::Failed, "armonly", "arm64"));
    let error = std::fs::read_to_string(repo.incoming().join("failed/armonly_2.0_arm64.deb.error")).unwrap();
    assert!(error.contains("arm64") && error.contains("reprepro includedeb"), "{error}");
    assert!(!repo.list().contains("armonly"));
    let stats = daemon.shutdown().await;
    assert_eq!((stats.added, stats.failed), (0, 2));
}

/// Writes half of `deb` under its final name and keeps it open; returns the writer and the rest.
fn start_copy(deb: &Path, dest: &Path) -> (std::fs::File, Vec<u8>) {
    let bytes = std::fs::read(deb).unwrap();
    let half = bytes.len() / 2;
    let mut f = std::fs::File::create(dest).unwrap();
    f.write_all(&bytes[..half]).unwrap();
    f.flush().unwrap();
    (f, bytes[half..].to_vec())
}

async fn half_copied_file_is_not_taken(watch: &str) {
    if !have_reprepro() {
        return;
    }
    let target = Target::embedded().await;
    let repo = Repo::new(&format!("half-{watch}"));
    let daemon = start(&target, repo.config(watch, "")).await;
    assert_eq!(daemon.inotify(), watch == "inotify");
    let mut obs = daemon.subscribe();

    let slow = repo.deb("slow", "1.0", "amd64", 256 * 1024);
    let slow_dest = repo.incoming().join("slow_1.0_amd64.deb");
    let (mut writer, rest) = start_copy(&slow, &slow_dest);
    // A complete package dropped after the half one: once it is done, the half
    // file has been looked at (and settled) at least once.
    repo.drop_in(&repo.deb("quick", "1.0", "amd64", 100));
    let (pkg, _) = done_for(&mut obs, "quick_1.0_amd64.deb").await;
    assert_eq!(pkg.action, PackageAction::Added);
    assert!(slow_dest.exists(), "the half-copied file stays in incoming");
    assert!(!repo.incoming().join("failed/slow_1.0_amd64.deb").exists() && !repo.incoming().join("archive/slow_1.0_amd64.deb").exists());
    assert_eq!(daemon.stats().added + daemon.stats().failed, 1, "only the complete file was taken");

    writer.write_all(&rest).unwrap();
    drop(writer);
    let (pkg, moved) = done_for(&mut obs, "slow_1.0_amd64.deb").await;
    assert_eq!(pkg.action, PackageAction::Added, "{:?}", pkg.detail);
    assert_eq!(moved.unwrap(), repo.incoming().join("archive/slow_1.0_amd64.deb"));
    assert!(repo.list().contains("slow 1.0"), "{}", repo.list());
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_half_copied_file_is_not_picked_up_with_inotify() {
    half_copied_file_is_not_taken("inotify").await;
}

#[tokio::test]
async fn a_half_copied_file_is_not_picked_up_when_polling() {
    half_copied_file_is_not_taken("poll").await;
}

#[tokio::test]
async fn once_spools_while_the_broker_is_down_and_sends_later() {
    if !have_reprepro() {
        return;
    }
    let repo = Repo::new("once");
    let deb = repo.deb("cronpkg", "3.1-2", "amd64", 100);
    std::fs::copy(&deb, repo.incoming().join("cronpkg_3.1-2_amd64.deb")).unwrap();
    std::fs::write(repo.incoming().join(".cronpkg.deb.part"), b"partial upload").unwrap();
    let target = Target::embedded().await;
    let ptopic = target.dest("topic");
    let config = repo.config("poll", &format!("packages_topic = {ptopic:?}"));

    // No broker: included anyway, the two messages wait in the spool.
    let out = debrepo::run_once(config.clone(), None).await.unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(&out[0], RepoEvent::Done { package, .. } if package.action == PackageAction::Added));
    assert!(repo.incoming().join(".cronpkg.deb.part").exists(), "temporary names are left alone");
    let spooled = std::fs::read_dir(repo.root.join("spool")).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".msg")).count();
    assert_eq!(spooled, 2, "package message and event line spooled");

    // Next run with a broker: nothing to include, the spool drains.
    let listener = target.client().await;
    let mut packages = listener.subscribe(&ptopic, SubscribeOptions::default()).await.unwrap();
    let out = debrepo::run_once(config, Some(target.client().await)).await.unwrap();
    assert!(out.is_empty());
    let m = recv(&mut packages).await;
    let Ok(Message::Package(p)) = decode(m.destination(), &m.headers, &m.body) else { panic!("{:?}", m.text()) };
    assert_eq!((p.name.as_str(), p.version.as_str()), ("cronpkg", "3.1-2"));
}

#[tokio::test]
async fn legacy_wire_through_rabbitmq() {
    let Some(target) = Target::real(Kind::RabbitMq) else { return };
    if !have_reprepro() {
        return;
    }
    let repo = Repo::new("rabbit");
    let ptopic = target.dest("topic");
    let listener = target.client().await;
    let mut packages = listener.subscribe(&ptopic, SubscribeOptions::default()).await.unwrap();
    repo.drop_in(&repo.deb("rabbitpkg", "0.9", "amd64", 100));
    let config = repo.config("poll", &format!("wire = \"legacy\"\npackages_topic = {ptopic:?}"));
    let out = debrepo::run_once(config, Some(target.client().await)).await.unwrap();
    assert_eq!(out.len(), 1);
    let m = recv(&mut packages).await;
    assert_eq!(m.headers.get("subject"), Some("Package update: [rabbitpkg_0.9_amd64.deb]"));
    assert!(m.text().unwrap_or_default().starts_with("package: rabbitpkg_0.9_amd64.deb\n"), "{:?}", m.text());
}

/// Issue #13: the legacy body has no status and the original auto-reprepro
/// published only what it included, so in legacy wire a refused package must
/// not reach the packages topic (dk-apt-watch would act on it as an update).
/// Its event line still goes out.
#[tokio::test]
async fn legacy_wire_publishes_only_included_packages_and_apt_watch_ignores_refused_ones() {
    if !have_reprepro() {
        return;
    }
    let target = Target::embedded().await;
    let repo = Repo::new("legacy-refused");
    let (ptopic, etopic, wtopic) = (target.dest("topic"), target.dest("topic"), target.dest("topic"));
    let listener = target.client().await;
    let mut packages = listener.subscribe(&ptopic, SubscribeOptions::default()).await.unwrap();
    let mut events = listener.subscribe(&etopic, SubscribeOptions::default()).await.unwrap();

    // dk-apt-watch in legacy mode on the same topic, its action a real script counting runs.
    let script = repo.root.join("work/action.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"$1\" >> \"$(dirname \"$0\")/runs.log\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let watch = AptWatchConfig::parse(&format!(
        "node = \"web01\"\nwire = \"legacy\"\npackages_topic = {ptopic:?}\nevents_topic = {wtopic:?}\naction = [{script:?}, \"update\"]\nquiet = \"50ms\"\nmin_interval = \"0s\"\n"
    ))
    .unwrap();
    let watcher = aptwatch::start(watch, target.client().await).await.unwrap();
    let mut seen = watcher.subscribe();

    let config = repo.config("inotify", &format!("wire = \"legacy\"\npackages_topic = {ptopic:?}\nevents_topic = {etopic:?}"));
    let daemon = start(&target, config).await;
    let mut obs = daemon.subscribe();
    // Refused first (arm64 is not in conf/distributions), then one reprepro includes.
    repo.drop_in(&repo.deb("armonly", "2.0", "arm64", 100));
    let (pkg, _) = done_for(&mut obs, "armonly_2.0_arm64.deb").await;
    assert_eq!(pkg.action, PackageAction::Failed);
    repo.drop_in(&repo.deb("goodpkg", "1.0", "amd64", 100));
    let (pkg, _) = done_for(&mut obs, "goodpkg_1.0_amd64.deb").await;
    assert_eq!(pkg.action, PackageAction::Added);

    // Messages are sent in order: a message for the refused package would come first.
    let m = recv(&mut packages).await;
    assert_eq!(m.headers.get("subject"), Some("Package update: [goodpkg_1.0_amd64.deb]"));
    assert!(m.text().unwrap_or_default().starts_with("package: goodpkg_1.0_amd64.deb\n"), "{:?}", m.text());
    // Both event lines, the original's text.
    for line in ["Package armonly_2.0_arm64.deb / bookworm REFUSED by repository.", "Package goodpkg_1.0_amd64.deb / bookworm added to repository."] {
        let m = recv(&mut events).await;
        assert_eq!((m.headers.get("subject"), m.text()), (Some("Talking to eventbot"), Some(line)));
    }

    // dk-apt-watch saw the included package only, and ran for it alone.
    let first = tokio::time::timeout(WAIT, seen.recv()).await.expect("apt-watch saw a message").unwrap();
    let WatchEvent::Matched(p) = first else { panic!("first apt-watch event: {first:?}") };
    assert_eq!(p.file, "goodpkg_1.0_amd64.deb");
    let report = match tokio::time::timeout(WAIT, seen.recv()).await.expect("an apt-watch run").unwrap() {
        WatchEvent::Ran(r) => r,
        other => panic!("before the run: {other:?}"),
    };
    assert_eq!(report.triggers, ["goodpkg 1.0"]);
    assert_eq!(std::fs::read_to_string(repo.root.join("work/runs.log")).unwrap(), "update\n");
    let stats = daemon.shutdown().await;
    assert_eq!((stats.added, stats.failed), (1, 1));
    assert_eq!(watcher.shutdown().await.messages, 1);
}

#[tokio::test]
async fn an_idle_daemon_does_not_rescan_on_its_own_directory_reads() {
    // The daemon's own scans open the watched directory, which inotify reports:
    // those events must not cause further scans (a busy loop).
    let target = Target::embedded().await;
    let repo = Repo::new("idle");
    let mut config = repo.config("inotify", "");
    config.poll_interval = Duration::from_secs(60);
    let daemon = start(&target, config).await;
    std::fs::write(repo.incoming().join("README"), "not a package").unwrap();
    // A bounded wait is the only way to observe that nothing happens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = daemon.shutdown().await;
    assert!(stats.scans <= 3, "an idle daemon scanned {} times in 1 s", stats.scans);
}

/// A package already complete in incoming when dk-reprepro starts is taken at once;
/// an observer subscribed to the event channel made before the daemon (as dk-reprepro's
/// metrics are) is told, and so is one that subscribes to the daemon after a reload.
#[tokio::test]
async fn a_deb_waiting_at_start_up_is_reported_to_an_observer_subscribed_before() {
    if !have_reprepro() {
        return;
    }
    let target = Target::embedded().await;
    let repo = Repo::new("startup");
    let waiting = repo.drop_in(&repo.deb("early", "1.0", "amd64", 256));
    let name = waiting.file_name().unwrap().to_str().unwrap().to_owned();
    let config = repo.config("inotify", "");
    let events = deploykit::daemon::event_channel();
    let mut observer = events.subscribe();
    let daemon = debrepo::spawn(config.clone(), Some(target.client().await), events).await.expect("daemon starts");
    let (package, moved_to) = done_for(&mut observer, &name).await;
    assert_eq!((package.action, package.name.as_str()), (PackageAction::Added, "early"));
    assert!(moved_to.is_some_and(|p| p.exists()), "archived");
    assert!(repo.list().contains("early 1.0"), "{}", repo.list());
    // After a reload the new watcher reports to the same channel, once per event.
    daemon.reload(config).await.expect("reload");
    let mut after = daemon.subscribe();
    let second = repo.drop_in(&repo.deb("later", "1.0", "amd64", 256));
    let second = second.file_name().unwrap().to_str().unwrap().to_owned();
    done_for(&mut after, &second).await;
    done_for(&mut observer, &second).await;
    // Once the daemon has stopped, everything it sent is in the channel: no second copy.
    daemon.shutdown(WAIT).await;
    while let Ok(ev) = observer.try_recv() {
        assert!(!matches!(&ev, RepoEvent::Done { package, .. } if package.file == second), "the reloaded watcher's event came twice");
    }
}
