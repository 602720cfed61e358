"""Assemble a local OpenSearch node from Maven Central alone (docs/design.md#the-local-stack).

Maven Central is the only place these machines can download OpenSearch from, and it holds no
ready-made distribution with plugins: only the `integ-test-zip` (core + `transport-netty4`, no JDK),
the plugin zips, and the module jars. So this file:

1. has `mvn` fetch the integ-test-zip, the four plugin zips and, per module, the module jar with its
   runtime dependencies (one generated reactor pom, one `mvn validate`, so one JVM start);
2. unzips the distribution and builds `modules/lang-painless`, `modules/reindex` and
   `modules/ingest-common` by hand (modules cannot be installed with `opensearch-plugin`: they are
   "system modules"), leaving out every jar `lib/` already has (duplicates fail the jar-hell check);
3. installs the plugins with `bin/opensearch-plugin install --batch`, parents before children.

The build happens in a staging folder and is moved into place when complete, then a marker records
the recipe, so a second call (or a call after an interrupted one) is cheap and never half-built.

The security plugin goes into a second tree, `opensearch-<version>-secure`, made from the first one with
hard links plus the plugin: a node without security runs exactly the distribution it ran before (no plugin
installed and switched off), the two never rebuild each other, and the copy costs no disk space.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from localstack.processes import LocalStackError

DEFAULT_VERSION = "2.19.1"
MARKER = ".visual-search-ready"
# Pinned so the build does not depend on Maven's (old) default plugin version.
DEPENDENCY_PLUGIN = "3.6.1"


class DistributionError(LocalStackError):
    """The OpenSearch build could not be assembled; the message names the step and what failed."""


@dataclass(frozen=True)
class PluginSpec:
    """A plugin zip on Maven Central (`group:artifact:<version>.0:zip`) and the name it installs as."""

    name: str
    group: str
    artifact: str


@dataclass(frozen=True)
class ModuleSpec:
    """A module we build by hand: its jar on Maven, and what its `plugin-descriptor.properties` says."""

    name: str
    group: str
    artifact: str
    classname: str
    description: str
    extended_plugins: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()


# Install order matters: a plugin's `extended.plugins` must already be installed.
PLUGINS: tuple[PluginSpec, ...] = (
    PluginSpec("opensearch-job-scheduler", "org.opensearch.plugin", "opensearch-job-scheduler"),
    PluginSpec("opensearch-knn", "org.opensearch.plugin", "opensearch-knn"),  # extends lang-painless
    PluginSpec("opensearch-ml", "org.opensearch.plugin", "opensearch-ml-plugin"),  # extends job-scheduler
    # Published as `neural-search`, not `opensearch-neural-search` (that coordinate is not served).
    PluginSpec("opensearch-neural-search", "org.opensearch.plugin", "neural-search"),  # extends k-NN
)

# Only in the secure tree (see the module docstring); 43.8 MB on Maven Central.
SECURITY_PLUGIN = PluginSpec("opensearch-security", "org.opensearch.plugin", "opensearch-security")
SECURE_SUFFIX = "-secure"

MODULES: tuple[ModuleSpec, ...] = (
    # k-NN extends it; ML Commons runs painless pre/post-processing scripts.
    ModuleSpec(
        "lang-painless",
        "org.opensearch.plugin",
        "lang-painless",
        "org.opensearch.painless.PainlessPlugin",
        "An easy, safe and fast scripting language for OpenSearch",
        permissions=(
            'java.lang.RuntimePermission "createClassLoader"',  # painless compiles scripts to classes
            'java.lang.RuntimePermission "getClassLoader"',
        ),
    ),
    # ML Commons deletes a model's chunks with delete-by-query.
    ModuleSpec(
        "reindex",
        "org.opensearch.plugin",
        "reindex-client",
        "org.opensearch.index.reindex.ReindexPlugin",
        "The Reindex module adds APIs to reindex from one index to another or update documents in place.",
        permissions=('java.net.SocketPermission "*", "connect"',),  # reindex-from-remote
    ),
    # Templates ({{ _ingest.on_failure_message }}) in the dead-letter route's set processors.
    ModuleSpec(
        "lang-mustache",
        "org.opensearch.plugin",
        "lang-mustache-client",
        "org.opensearch.script.mustache.MustachePlugin",
        "Mustache scripting integration for OpenSearch",
        permissions=('java.lang.reflect.ReflectPermission "suppressAccessChecks"',),  # mustache reflects on maps
    ),
    # The set/remove processors of the dead-letter route; its script processor needs painless.
    ModuleSpec(
        "ingest-common",
        "org.opensearch.plugin",
        "ingest-common",
        "org.opensearch.ingest.common.IngestCommonPlugin",
        "Ingest processors that need no extra permissions and no large dependencies",
        extended_plugins=("lang-painless",),
    ),
)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[opensearch] {message}", file=sys.stderr, flush=True)


def find_java_home() -> Path:
    """OPENSEARCH_JAVA_HOME, JAVA_HOME, else the JDK behind `java` on PATH.

    The integ-test-zip has no bundled JDK and its launcher does not look at PATH, so one of the
    two variables must always be set for it.
    """
    for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(var)
        if value and (Path(value) / "bin" / "java").exists():
            return Path(value)
    java = shutil.which("java")
    if java is None:
        raise DistributionError("no Java found: set JAVA_HOME or put a JDK 17 `java` on PATH")
    return Path(java).resolve().parent.parent


def plugin_coordinates(version: str) -> list[str]:
    """Maven coordinates of the distribution and plugin zips, for messages and the pom."""
    coords = [f"org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"]
    coords += [f"{p.group}:{p.artifact}:{version}.0:zip" for p in PLUGINS]
    return coords


def module_coordinates(version: str) -> list[str]:
    return [f"{m.group}:{m.artifact}:{version}" for m in MODULES]


def _recipe(version: str) -> str:
    """A digest of what gets built; a changed recipe makes the marker stale and triggers a rebuild."""
    plugins = [asdict(p) for p in PLUGINS]
    modules = [asdict(m) for m in MODULES]
    data = json.dumps({"version": version, "plugins": plugins, "modules": modules}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


# --- Maven -------------------------------------------------------------------------------------------

_POM_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.visual-search</groupId>
  <artifactId>{artifact}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
"""


def _plugin_block(goal: str, configuration: str) -> str:
    return f"""  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId>
    <version>{DEPENDENCY_PLUGIN}</version>
    <executions><execution>
      <id>fetch</id><phase>validate</phase><goals><goal>{goal}</goal></goals>
      <configuration>{configuration}</configuration>
    </execution></executions>
  </plugin></plugins></build>
"""


def write_poms(maven_dir: Path, version: str) -> None:
    """A reactor: the root copies the zips to `zips/`, one child per module copies jar + deps to `jars/`.

    The module dependencies exclude `org.opensearch:opensearch` (the server jar and its whole tree,
    all of which is in `lib/` already); what still overlaps with `lib/` is filtered afterwards.
    """
    items = []
    for coord in plugin_coordinates(version):
        group, artifact, ver, _ = coord.split(":")
        items.append(
            f"<artifactItem><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{ver}</version><type>zip</type></artifactItem>"
        )
    root_conf = (
        "<outputDirectory>${project.basedir}/zips</outputDirectory>"
        f"<artifactItems>{''.join(items)}</artifactItems>"
    )
    children = "".join(f"<module>{m.name}</module>" for m in MODULES)
    (maven_dir / "pom.xml").write_text(
        _POM_HEAD.format(artifact="opensearch-dist")
        + f"  <modules>{children}</modules>\n"
        + _plugin_block("copy", root_conf)
        + "</project>\n"
    )
    for m in MODULES:
        child = maven_dir / m.name
        child.mkdir(parents=True, exist_ok=True)
        dep = (
            f"<dependency><groupId>{m.group}</groupId><artifactId>{m.artifact}</artifactId>"
            f"<version>{version}</version><exclusions><exclusion><groupId>org.opensearch</groupId>"
            "<artifactId>opensearch</artifactId></exclusion></exclusions></dependency>"
        )
        conf = (
            "<outputDirectory>${project.basedir}/jars</outputDirectory><includeScope>runtime</includeScope>"
        )
        (child / "pom.xml").write_text(
            _POM_HEAD.format(artifact=f"module-{m.name}")
            + f"  <dependencies>{dep}</dependencies>\n"
            + _plugin_block("copy-dependencies", conf)
            + "</project>\n"
        )


def run_maven(maven_dir: Path, version: str, progress: bool, wanted: Sequence[str] | None = None) -> None:
    """`mvn -B validate` on the pom in `maven_dir`; on failure raise with the coordinates Maven could not get.

    `wanted` names what the pom fetches (for the message); by default the reactor's artifacts."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DistributionError("`mvn` is not on PATH (Debian: apt-get install maven)")
    env = {**os.environ, "JAVA_HOME": str(find_java_home())}
    cmd = [mvn, "-B", "--fail-at-end", "-f", str(maven_dir / "pom.xml"), "validate"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=maven_dir
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        # Only the OpenSearch artifacts: Maven's own plugin downloads are noise.
        got = re.search(r"Downloaded from .*/org/opensearch/.*/([^/\s]+\.(?:jar|zip)) \((.*)\)", line)
        if got:
            _say(progress, f"  downloaded {got.group(1)} ({got.group(2)})")
    if proc.wait() != 0:
        # Maven words a miss several ways (and differently once it has cached one): take the coordinates.
        errors = "\n".join(line for line in lines if line.startswith("[ERROR]"))
        coordinate = r"\b(org\.opensearch[\w.-]*:[\w.-]+:(?:zip|jar|pom):[\w.-]+)"
        missing = sorted(set(re.findall(coordinate, errors)))
        fetched = ", ".join(wanted or plugin_coordinates(version) + module_coordinates(version))
        detail = f"not served: {', '.join(missing)}" if missing else "\n".join(lines[-25:])
        raise DistributionError(f"Maven could not fetch OpenSearch {version} ({fetched}); {detail}")


# --- building the tree ---------------------------------------------------------------------------------


def _unzip(archive: Path, dest: Path) -> None:
    """Extract keeping the Unix mode bits (zipfile drops them; bin/ must stay executable)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)


def _jar_key(name: str) -> str:
    """`lucene-core-9.12.1.jar` -> `lucene-core`: compare by artifact so a version skew is caught too."""
    match = re.match(r"(.+?)-\d", name)
    return match.group(1) if match else name.removesuffix(".jar")


def _descriptor(m: ModuleSpec, version: str) -> str:
    """Exactly the keys the 2.x plugin loader accepts: an unknown key fails node start."""
    return (
        f"description={m.description}\n"
        f"version={version}\n"
        f"name={m.name}\n"
        f"classname={m.classname}\n"
        "java.version=11\n"
        f"opensearch.version={version}\n"
        "custom.foldername=\n"
        f"extended.plugins={','.join(m.extended_plugins)}\n"
        "has.native.controller=false\n"
    )


def build_modules(home: Path, maven_dir: Path, version: str, progress: bool) -> dict[str, list[str]]:
    """Lay out `modules/<name>/` for every module; returns the jars each got."""
    lib_keys = {_jar_key(p.name) for p in (home / "lib").glob("*.jar")}
    laid: dict[str, list[str]] = {}
    for m in MODULES:
        target = home / "modules" / m.name
        target.mkdir(parents=True, exist_ok=True)
        parent_keys = {_jar_key(j) for parent in m.extended_plugins for j in laid.get(parent, [])}
        jars = []
        for jar in sorted((maven_dir / m.name / "jars").glob("*.jar")):
            key = _jar_key(jar.name)
            if key in lib_keys or key in parent_keys:
                continue  # the server (or the parent module) already loads it: a copy would be jar hell
            shutil.copy2(jar, target / jar.name)
            jars.append(jar.name)
        if not any(j.startswith(f"{m.artifact}-") for j in jars):
            coord = f"{m.group}:{m.artifact}:{version}"
            raise DistributionError(f"module {m.name}: the {coord} jar is missing after Maven")
        (target / "plugin-descriptor.properties").write_text(_descriptor(m, version))
        grants = "".join(f"  permission {p};\n" for p in m.permissions)
        (target / "plugin-security.policy").write_text(f"grant {{\n{grants}}};\n")
        laid[m.name] = jars
        _say(progress, f"module {m.name}: {', '.join(jars)}")
    return laid


def install_plugins(home: Path, zips: Path, version: str, progress: bool,
                    plugins: Sequence[PluginSpec] = PLUGINS) -> None:
    env = {**os.environ, "JAVA_HOME": str(find_java_home())}
    env.pop("OPENSEARCH_PATH_CONF", None)  # plugin config belongs in the distribution's own config/
    for p in plugins:
        archive = zips / f"{p.artifact}-{version}.0.zip"
        _say(progress, f"installing plugin {p.name} ({archive.stat().st_size // 2**20} MiB)")
        result = subprocess.run(
            [str(home / "bin" / "opensearch-plugin"), "install", "--batch", archive.resolve().as_uri()],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise DistributionError(
                f"opensearch-plugin install {p.group}:{p.artifact}:{version}.0:zip failed "
                f"(exit {result.returncode}):\n{tail}"
            )


def _secure_recipe(version: str) -> str:
    return hashlib.sha256(f"{_recipe(version)}+{asdict(SECURITY_PLUGIN)}".encode()).hexdigest()[:16]


def installed(home: Path, version: str, secure: bool = False) -> bool:
    marker = home / MARKER
    if not marker.is_file():
        return False
    try:
        recipe = _secure_recipe(version) if secure else _recipe(version)
        return json.loads(marker.read_text()).get("recipe") == recipe
    except (OSError, ValueError):
        return False


def ensure_distribution(cache_dir: Path, version: str = DEFAULT_VERSION, progress: bool = True,
                        secure: bool = False) -> Path:
    """Return `cache_dir/opensearch/opensearch-<version>` (with `secure`, `...-secure`: the same plus the security
    plugin), building it first if needed.

    Idempotent: a complete build (marker with the current recipe) is returned at once without
    starting Maven. Raises `DistributionError` naming the step or the Maven coordinates that failed.
    """
    root = Path(cache_dir).resolve() / "opensearch"
    home = root / f"opensearch-{version}"
    secure_home = root / f"opensearch-{version}{SECURE_SUFFIX}"
    if installed(secure_home if secure else home, version, secure):
        return secure_home if secure else home
    root.mkdir(parents=True, exist_ok=True)
    # `make up` and a test session may both find no build: one builds, the other waits and reuses it.
    with (root / f".lock-{version}").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed(home, version):
            _build(root, home, version, progress)
        if secure and not installed(secure_home, version, secure=True):
            _build_secure(root, home, secure_home, version, progress)
    return secure_home if secure else home


def _build(root: Path, home: Path, version: str, progress: bool) -> None:
    started = time.monotonic()
    _say(progress, f"building OpenSearch {version} with plugins into {home}")
    maven_dir = root / f"maven-{version}"
    staging = root / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    maven_dir.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True)

    _say(progress, "fetching artifacts with Maven: " + ", ".join(plugin_coordinates(version)))
    write_poms(maven_dir, version)
    run_maven(maven_dir, version, progress)

    dist_zip = maven_dir / "zips" / f"opensearch-{version}.zip"
    _say(progress, f"unpacking {dist_zip.name}")
    _unzip(dist_zip, staging)
    built = staging / f"opensearch-{version}"
    if not (built / "bin" / "opensearch").is_file():
        raise DistributionError(f"{dist_zip} does not hold opensearch-{version}/bin/opensearch")

    modules = build_modules(built, maven_dir, version, progress)
    install_plugins(built, maven_dir / "zips", version, progress)

    record = {"recipe": _recipe(version), "plugins": [p.name for p in PLUGINS], "modules": modules}
    (built / MARKER).write_text(json.dumps(record, indent=1))
    shutil.rmtree(home, ignore_errors=True)
    built.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    # The copied zips (~430 MiB, the ML plugin alone ~350) stay in Maven's local repository anyway.
    shutil.rmtree(maven_dir / "zips", ignore_errors=True)
    _say(progress, f"OpenSearch {version} ready in {time.monotonic() - started:.0f}s")


class _DownloadProgress:
    """Reports, every few seconds, how much of a large artifact Maven has written so far: in batch mode Maven itself
    says nothing until the download is complete (the security plugin is 43.8 MB)."""

    def __init__(self, artifact_dir: Path, name: str, progress: bool, every_s: float = 5) -> None:
        self.artifact_dir, self.name, self.progress, self.every_s = artifact_dir, name, progress, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.every_s):
            sizes = [p.stat().st_size for p in self.artifact_dir.glob(f"{self.name}*") if p.is_file()]
            if sizes:
                mib = max(sizes) / 2**20
                _say(self.progress, f"  {self.name}: {mib:.1f} MiB so far ({time.monotonic() - started:.0f}s)")

    def __enter__(self) -> _DownloadProgress:
        if self.progress:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def _link_tree(source: Path, target: Path) -> None:
    """`source` copied as hard links (no disk space, seconds), except the build marker, which the copy rewrites: a
    hard-linked marker written in place would change the source's too. Nothing else in a distribution is written
    after it is built (nodes keep their config and data elsewhere), and installing a plugin only adds files."""
    def link(src: str, dst: str) -> object:
        if Path(src).name == MARKER:
            return None
        try:
            os.link(src, dst)
        except OSError:  # another file system: copy instead
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(source, target, symlinks=True, copy_function=link)


def _build_secure(root: Path, home: Path, secure_home: Path, version: str, progress: bool) -> None:
    started = time.monotonic()
    plugin = SECURITY_PLUGIN
    coordinate = f"{plugin.group}:{plugin.artifact}:{version}.0:zip"
    _say(progress, f"adding the security plugin ({coordinate}) in {secure_home}")
    maven_dir = root / f"maven-{version}" / "security"
    maven_dir.mkdir(parents=True, exist_ok=True)
    item = (f"<artifactItem><groupId>{plugin.group}</groupId><artifactId>{plugin.artifact}</artifactId>"
            f"<version>{version}.0</version><type>zip</type></artifactItem>")
    conf = f"<outputDirectory>${{project.basedir}}/zips</outputDirectory><artifactItems>{item}</artifactItems>"
    (maven_dir / "pom.xml").write_text(_POM_HEAD.format(artifact="opensearch-security")
                                       + _plugin_block("copy", conf) + "</project>\n")
    local_repo = Path.home() / ".m2" / "repository" / Path(*plugin.group.split(".")) / plugin.artifact / f"{version}.0"
    with _DownloadProgress(local_repo, f"{plugin.artifact}-{version}.0.zip", progress):
        run_maven(maven_dir, version, progress, wanted=[coordinate])
    staging = root / f".staging-{version}{SECURE_SUFFIX}"
    shutil.rmtree(staging, ignore_errors=True)
    _link_tree(home, staging)
    install_plugins(staging, maven_dir / "zips", version, progress, plugins=(plugin,))
    record = {"recipe": _secure_recipe(version), "plugins": [p.name for p in (*PLUGINS, plugin)]}
    (staging / MARKER).write_text(json.dumps(record, indent=1))
    shutil.rmtree(secure_home, ignore_errors=True)
    staging.rename(secure_home)
    shutil.rmtree(maven_dir / "zips", ignore_errors=True)
    _say(progress, f"OpenSearch {version} with security ready in {time.monotonic() - started:.0f}s")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m localstack.opensearch_dist [CACHE_DIR] [VERSION]`: build (or confirm) the distribution.

    Without arguments the cache folder and version come from the config file; the secure tree is built too when
    the config switches security on (`opensearch.security`).
    """
    from common.config import load_config

    args = list(argv if argv is not None else sys.argv[1:])
    settings = load_config()
    cache = Path(args[0]) if args else settings.cache
    version = args[1] if len(args) > 1 else settings.opensearch.version
    print(ensure_distribution(cache, version, secure=settings.opensearch.security))
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    raise SystemExit(run_command(main))
