package org.deploykit;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileAttribute;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.file.attribute.UserPrincipal;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import java.util.function.Function;
import java.util.regex.Pattern;

/**
 * Loads {@code libdeploykit_jni}: from {@code java.library.path} if it is there,
 * else from the jar itself ({@code /native/<os>-<arch>/libdeploykit_jni.so}).
 *
 * <p>The copy in the jar is extracted to a private directory, never to a shared
 * temporary one (a world-writable {@code /tmp} invites a swapped library, and is
 * often mounted {@code noexec}):
 * <ol>
 * <li>the system property {@value #DIR_PROPERTY}, if set (used as is);</li>
 * <li>else {@code $JENKINS_HOME/deploykit/native/<sha256>/} when {@code JENKINS_HOME}
 *     is set (system property first, then the environment, as Jenkins reads it);</li>
 * <li>else {@code ${XDG_CACHE_HOME:-~/.cache}/deploykit/native/<sha256>/}.</li>
 * </ol>
 * Directories it creates are {@code 0700}; every directory it uses must be owned
 * by the user the JVM runs as and writable by no one else, or loading fails.
 * The library's SHA-256 is stored in the jar next to it ({@code libdeploykit_jni.so.sha256},
 * written by {@code ffi-jvm/build-jar.sh}): the jar's copy must match it, and a file
 * already on disk that does not is replaced (written to a temporary file in the same
 * directory, then renamed over it atomically) before loading.
 */
public final class NativeLibrary {
    /** The library's base name, as {@link System#loadLibrary} wants it. */
    public static final String NAME = "deploykit_jni";

    /** System property naming the directory the library is extracted to, overriding the defaults. */
    public static final String DIR_PROPERTY = "deploykit.native.dir";

    private static final Pattern SHA256_HEX = Pattern.compile("[0-9a-f]{64}");
    private static final Set<PosixFilePermission> OWNER_ONLY_DIR = PosixFilePermissions.fromString("rwx------");
    private static final Set<PosixFilePermission> OWNER_ONLY_FILE = PosixFilePermissions.fromString("rwx------");

    private static String loadedFrom;
    private static Path extractedTo;

    private NativeLibrary() {}

    /** Loads the library once; later calls do nothing. */
    public static synchronized void load() {
        if (loadedFrom != null) {
            return;
        }
        try {
            System.loadLibrary(NAME);
            loadedFrom = "java.library.path";
            return;
        } catch (UnsatisfiedLinkError notOnPath) {
            String resource = resource();
            try {
                byte[] lib = readResource(resource);
                if (lib == null) {
                    throw new IOException("lib" + NAME + " is neither on java.library.path nor in the jar at " + resource);
                }
                String sha = expectedSha256(resource);
                Location where = location(System::getenv, System.getProperties(), sha);
                Path file = extract(lib, sha, prepare(where));
                loadFile(file);
                loadedFrom = "jar:" + resource;
                extractedTo = file;
            } catch (UnsatisfiedLinkError e) {
                e.addSuppressed(notOnPath);
                throw e;
            } catch (IOException | RuntimeException e) {
                UnsatisfiedLinkError error = new UnsatisfiedLinkError("cannot load lib" + NAME + " from the jar: " + e.getMessage());
                error.initCause(e);
                error.addSuppressed(notOnPath);
                throw error;
            }
        }
    }

    /** {@link System#load} of {@code file}; a failure says why in words, with what to do about it. */
    static void loadFile(Path file) {
        try {
            System.load(file.toString());
        } catch (UnsatisfiedLinkError e) {
            UnsatisfiedLinkError explained = new UnsatisfiedLinkError(explain(e.getMessage(), file));
            explained.initCause(e);
            throw explained;
        }
    }

    /** The cause and the workaround for the JVM's message {@code jvm} about loading {@code file}. */
    static String explain(String jvm, Path file) {
        String m = jvm == null ? "" : jvm;
        String dir = String.valueOf(file.getParent());
        String cause;
        if (m.contains("failed to map segment") || m.contains("Operation not permitted")) {
            cause = "the file system of " + dir + " does not allow executing code (mounted noexec). Workaround: set -D"
                    + DIR_PROPERTY + "=<a directory on an exec-mounted file system, owned by this user, mode 0700>";
        } else if (m.contains("GLIBC_") && m.contains("not found")) {
            cause = "this system's C library (glibc) is older than the one lib" + NAME + " was built against (glibc 2.34, Debian 12). "
                    + "Workaround: run on a newer system, or build the library there (cargo build --release -p deploykit-jni) "
                    + "and put it on java.library.path";
        } else if (m.contains("invalid ELF header") || m.contains("file too short")) {
            cause = "the file is not a shared library (damaged or cut short). Workaround: delete it (it is extracted again "
                    + "from the jar and checked against its SHA-256), or set -D" + DIR_PROPERTY + " to another directory";
        } else if (m.contains("wrong ELF class") || m.contains("ELF") || m.contains("machine")) {
            cause = "the library in the jar is for linux-x86_64 and does not fit this JVM (os.arch=" + System.getProperty("os.arch")
                    + ", " + System.getProperty("sun.arch.data.model", "?") + "-bit). Workaround: build lib" + NAME
                    + " for this platform (cargo build --release -p deploykit-jni) and put it on java.library.path";
        } else {
            cause = "the dynamic loader refused it. Workaround: check the file and its directory, or put a lib" + NAME
                    + " built here on java.library.path";
        }
        return "cannot load lib" + NAME + " from " + file + ": " + cause + " (the JVM said: " + m + ")";
    }

    /**
     * Loads the library and says where from: {@code java -cp deploykit.jar org.deploykit.NativeLibrary}
     * checks an installation (exit 0), or prints why it cannot load (exit 1).
     *
     * @param args ignored
     */
    public static void main(String[] args) {
        try {
            load();
        } catch (UnsatisfiedLinkError e) {
            System.err.println("deploykit: " + e.getMessage());
            System.exit(1);
        }
        Path file = extractedTo();
        System.out.println("deploykit: lib" + NAME + " loaded from " + loadedFrom() + (file == null ? "" : " (extracted to " + file + ")"));
    }

    /** Where the library came from: {@code java.library.path} or {@code jar:/native/…}; null before loading. */
    public static synchronized String loadedFrom() {
        return loadedFrom;
    }

    /** The file the jar's library was extracted to and loaded from; null if it came from {@code java.library.path} or is not loaded. */
    public static synchronized Path extractedTo() {
        return extractedTo;
    }

    /** The jar directory for this platform, e.g. {@code linux-x86_64}. */
    static String classifier() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        String o = os.contains("linux") ? "linux" : os.contains("mac") ? "macos" : os.replaceAll("[^a-z0-9]", "");
        String a = arch.equals("amd64") || arch.equals("x86_64") ? "x86_64" : arch.equals("arm64") ? "aarch64" : arch;
        return o + "-" + a;
    }

    /** The library's resource in the jar, e.g. {@code /native/linux-x86_64/libdeploykit_jni.so}. */
    static String resource() {
        return "/native/" + classifier() + "/" + System.mapLibraryName(NAME);
    }

    /** The bytes of a jar resource, or null if there is none. */
    static byte[] readResource(String name) throws IOException {
        try (InputStream in = NativeLibrary.class.getResourceAsStream(name)) {
            return in == null ? null : in.readAllBytes();
        }
    }

    /** The SHA-256 (lowercase hex) the jar states for {@code resource}, from {@code resource + ".sha256"}. */
    static String expectedSha256(String resource) throws IOException {
        byte[] text = readResource(resource + ".sha256");
        if (text == null) {
            throw new IOException("the jar has no checksum " + resource + ".sha256 for " + resource + "; refusing to load an unverified library");
        }
        String s = new String(text, StandardCharsets.US_ASCII).trim();
        String hex = s.split("\\s+", 2)[0].toLowerCase(Locale.ROOT);
        if (!SHA256_HEX.matcher(hex).matches()) {
            throw new IOException(resource + ".sha256 does not start with a SHA-256 in hex");
        }
        return hex;
    }

    /** Where to extract: {@code dir}, created below {@code base} (each level below it checked), or {@code dir} alone if {@code base} is null. */
    static final class Location {
        /** The existing directory the created levels hang from; null for an override used as is. */
        final Path base;
        /** The directory the library goes to. */
        final Path dir;

        /** A location of {@code dir} below {@code base}. */
        Location(Path base, Path dir) {
            this.base = base;
            this.dir = dir;
        }
    }

    /**
     * Chooses the directory for the library with SHA-256 {@code sha}, from the
     * environment ({@code env}: {@code JENKINS_HOME}, {@code XDG_CACHE_HOME}) and the
     * system properties ({@value #DIR_PROPERTY}, {@code JENKINS_HOME}, {@code user.home}).
     */
    static Location location(Function<String, String> env, Properties props, String sha) throws IOException {
        String override = props.getProperty(DIR_PROPERTY);
        if (nonBlank(override)) {
            return new Location(null, Path.of(override).toAbsolutePath().normalize());
        }
        String jenkins = props.getProperty("JENKINS_HOME");
        if (!nonBlank(jenkins)) {
            jenkins = env.apply("JENKINS_HOME");
        }
        if (nonBlank(jenkins)) {
            Path base = Path.of(jenkins).toAbsolutePath().normalize();
            return new Location(base, base.resolve("deploykit").resolve("native").resolve(sha));
        }
        // XDG: a relative XDG_CACHE_HOME is invalid and ignored.
        String xdg = env.apply("XDG_CACHE_HOME");
        Path cache;
        if (nonBlank(xdg) && Path.of(xdg).isAbsolute()) {
            cache = Path.of(xdg).normalize();
        } else {
            String home = props.getProperty("user.home");
            if (!nonBlank(home) || !Path.of(home).isAbsolute()) {
                throw new IOException("no JENKINS_HOME, XDG_CACHE_HOME or home directory to extract lib" + NAME
                        + " to; set -D" + DIR_PROPERTY + "=DIR (a directory of this user's, writable by no one else)");
            }
            cache = Path.of(home).normalize().resolve(".cache");
        }
        return new Location(cache, cache.resolve("deploykit").resolve("native").resolve(sha));
    }

    /**
     * Creates the location's directory (each missing level {@code 0700}) and checks
     * every level below the base, or the override directory itself: a real directory,
     * owned by this user, not group- or world-writable.
     */
    static Path prepare(Location where) throws IOException {
        if (where.base == null) {
            mkdirPrivate(where.dir);
            checkPrivate(where.dir);
            return where.dir;
        }
        if (!Files.isDirectory(where.base)) {
            Files.createDirectories(where.base, ownerOnlyDir());
        }
        Path p = where.base;
        for (Path name : where.base.relativize(where.dir)) {
            p = p.resolve(name);
            mkdirPrivate(p);
            checkPrivate(p);
        }
        return where.dir;
    }

    /** Creates {@code dir} with mode 0700 unless it exists (its parent must exist). */
    private static void mkdirPrivate(Path dir) throws IOException {
        try {
            Files.createDirectory(dir, ownerOnlyDir());
            // The umask may have taken bits away; set exactly 0700.
            Files.setPosixFilePermissions(dir, OWNER_ONLY_DIR);
        } catch (FileAlreadyExistsException exists) {
            // checked by checkPrivate
        }
    }

    /** Refuses a path that is not a directory (a symlink is not), not this user's, or writable by group or others. */
    static void checkPrivate(Path dir) throws IOException {
        PosixFileAttributes a = Files.readAttributes(dir, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        if (!a.isDirectory()) {
            throw new IOException("refusing " + dir + " for lib" + NAME + ": not a directory (a symlink is refused too)");
        }
        if (!ownedByMe(dir, a.owner())) {
            throw new IOException("refusing " + dir + " for lib" + NAME + ": owned by " + a.owner().getName()
                    + ", not by the user this JVM runs as");
        }
        Set<PosixFilePermission> perms = a.permissions();
        if (perms.contains(PosixFilePermission.GROUP_WRITE) || perms.contains(PosixFilePermission.OTHERS_WRITE)) {
            throw new IOException("refusing " + dir + " for lib" + NAME + ": it is group- or world-writable ("
                    + PosixFilePermissions.toString(perms) + "); make it 0700 or set -D" + DIR_PROPERTY);
        }
    }

    /** Whether {@code path} (whose owner is {@code owner}) belongs to the user this process runs as. */
    private static boolean ownedByMe(Path path, UserPrincipal owner) throws IOException {
        // Linux: /proc/self is the process's own directory, owned by its effective uid.
        Path self = Path.of("/proc/self");
        if (Files.isDirectory(self)) {
            Object mine = Files.getAttribute(self, "unix:uid");
            Object theirs = Files.getAttribute(path, "unix:uid", LinkOption.NOFOLLOW_LINKS);
            return mine.equals(theirs);
        }
        String me = System.getProperty("user.name", "");
        return !me.isEmpty() && owner.equals(path.getFileSystem().getUserPrincipalLookupService().lookupPrincipalByName(me));
    }

    /**
     * Puts {@code lib} (whose SHA-256 must be {@code sha}) into {@code dir} and
     * returns its path: a file already there with that checksum is kept; anything
     * else there (another build, a tampered copy, a symlink) is replaced atomically.
     */
    static Path extract(byte[] lib, String sha, Path dir) throws IOException {
        String actual = sha256(lib);
        if (!actual.equals(sha)) {
            throw new IOException("checksum mismatch: the jar's lib" + NAME + " has SHA-256 " + actual + " but the jar states " + sha
                    + "; the jar is damaged or was tampered with, refusing to load it");
        }
        Path file = dir.resolve(System.mapLibraryName(NAME));
        if (Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS) && sha.equals(sha256(file))) {
            return file;
        }
        Path tmp = Files.createTempFile(dir, "." + file.getFileName() + ".", ".tmp", ownerOnlyFile());
        try {
            Files.write(tmp, lib, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.SYNC);
            Files.setPosixFilePermissions(tmp, OWNER_ONLY_FILE);
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
        String written = sha256(file);
        if (!written.equals(sha)) {
            throw new IOException(file + " changed while it was being extracted (SHA-256 " + written + ", expected " + sha + ")");
        }
        return file;
    }

    /** The SHA-256 of {@code bytes}, lowercase hex. */
    static String sha256(byte[] bytes) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(bytes);
            StringBuilder s = new StringBuilder(64);
            for (byte b : d) {
                s.append(Character.forDigit((b >> 4) & 0xf, 16)).append(Character.forDigit(b & 0xf, 16));
            }
            return s.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java platform has SHA-256", e);
        }
    }

    /** The SHA-256 of a file's contents, lowercase hex (the file is not followed if it is a symlink). */
    static String sha256(Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file, LinkOption.NOFOLLOW_LINKS)) {
            return sha256(in.readAllBytes());
        }
    }

    private static boolean nonBlank(String s) {
        return s != null && !s.isBlank();
    }

    private static FileAttribute<Set<PosixFilePermission>> ownerOnlyDir() {
        return PosixFilePermissions.asFileAttribute(OWNER_ONLY_DIR);
    }

    private static FileAttribute<Set<PosixFilePermission>> ownerOnlyFile() {
        return PosixFilePermissions.asFileAttribute(OWNER_ONLY_FILE);
    }
}
