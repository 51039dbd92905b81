package org.deploykit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.file.attribute.UserPrincipal;
import java.util.Map;
import java.util.Properties;
import java.util.function.Function;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Where and how the jar's native library is extracted: the directory chosen from
 * JENKINS_HOME, the XDG cache or the override property; 0700 directories; the
 * SHA-256 check against the checksum the jar carries; a tampered copy on disk
 * replaced atomically; unsafe directories refused. The library bytes are the real
 * ones from the jar under test (ffi-jvm/build-jar.sh puts them and their checksum there).
 */
class NativeLibraryTest {
    static byte[] lib;
    static String sha;

    @TempDir
    Path tmp;

    @BeforeAll
    static void readTheJarsLibrary() throws IOException {
        lib = NativeLibrary.readResource(NativeLibrary.resource());
        assertNotNull(lib, "the jar holds " + NativeLibrary.resource());
        sha = NativeLibrary.expectedSha256(NativeLibrary.resource());
        assertEquals(sha, NativeLibrary.sha256(lib), "the jar's checksum resource matches its library");
    }

    static Function<String, String> env(Map<String, String> vars) {
        return vars::get;
    }

    static Properties props(String... keyValues) {
        Properties p = new Properties();
        p.setProperty("user.home", "/home/someone");
        for (int i = 0; i + 1 < keyValues.length; i += 2) {
            p.setProperty(keyValues[i], keyValues[i + 1]);
        }
        return p;
    }

    static String mode(Path p) throws IOException {
        return PosixFilePermissions.toString(Files.getPosixFilePermissions(p, LinkOption.NOFOLLOW_LINKS));
    }

    @Test
    void directoryComesFromJenkinsHome() throws IOException {
        NativeLibrary.Location env = NativeLibrary.location(env(Map.of("JENKINS_HOME", "/var/lib/jenkins", "XDG_CACHE_HOME", "/c")), props(), sha);
        assertEquals(Path.of("/var/lib/jenkins/deploykit/native", sha), env.dir);
        assertEquals(Path.of("/var/lib/jenkins"), env.base);
        // Jenkins's own order: the system property before the environment.
        NativeLibrary.Location prop = NativeLibrary.location(env(Map.of("JENKINS_HOME", "/var/lib/jenkins")), props("JENKINS_HOME", "/srv/jenkins"), sha);
        assertEquals(Path.of("/srv/jenkins/deploykit/native", sha), prop.dir);
    }

    @Test
    void directoryComesFromTheCacheWithoutJenkins() throws IOException {
        assertEquals(Path.of("/xdg/cache/deploykit/native", sha),
                NativeLibrary.location(env(Map.of("XDG_CACHE_HOME", "/xdg/cache")), props(), sha).dir);
        assertEquals(Path.of("/home/someone/.cache/deploykit/native", sha), NativeLibrary.location(env(Map.of()), props(), sha).dir);
        // A relative XDG_CACHE_HOME is invalid (XDG base directory spec) and ignored.
        assertEquals(Path.of("/home/someone/.cache/deploykit/native", sha),
                NativeLibrary.location(env(Map.of("XDG_CACHE_HOME", "relative/cache")), props(), sha).dir);
        Properties homeless = new Properties();
        homeless.setProperty("user.home", "?");
        IOException e = assertThrows(IOException.class, () -> NativeLibrary.location(env(Map.of()), homeless, sha));
        assertTrue(e.getMessage().contains(NativeLibrary.DIR_PROPERTY), e.getMessage());
    }

    @Test
    void overridePropertyWinsAndIsUsedAsIs() throws IOException {
        NativeLibrary.Location o = NativeLibrary.location(env(Map.of("JENKINS_HOME", "/j", "XDG_CACHE_HOME", "/c")),
                props(NativeLibrary.DIR_PROPERTY, "/opt/dk/native"), sha);
        assertEquals(Path.of("/opt/dk/native"), o.dir);
        assertNull(o.base);
    }

    @Test
    void theSuiteLoadedTheLibraryFromThePrivateCache() throws IOException {
        NativeLibrary.load();
        String xdg = System.getenv("XDG_CACHE_HOME");
        assumeTrue(NativeLibrary.loadedFrom().startsWith("jar:") && xdg != null, "loaded from the jar with XDG_CACHE_HOME set (scripts/jvm-suite.sh)");
        Path file = NativeLibrary.extractedTo();
        assertEquals(Path.of(xdg, "deploykit", "native", sha, System.mapLibraryName(NativeLibrary.NAME)), file);
        assertEquals(sha, NativeLibrary.sha256(file));
        for (Path d = file.getParent(); !d.equals(Path.of(xdg)); d = d.getParent()) {
            assertEquals("rwx------", mode(d), d.toString());
        }
    }

    @Test
    void extractionIntoJenkinsHomeCreatesPrivateDirectories() throws IOException {
        Path jenkinsHome = Files.createDirectory(tmp.resolve("jenkins"));
        NativeLibrary.Location where = NativeLibrary.location(env(Map.of("JENKINS_HOME", jenkinsHome.toString())), props(), sha);
        Path dir = NativeLibrary.prepare(where);
        Path file = NativeLibrary.extract(lib, sha, dir);
        assertEquals(jenkinsHome.resolve("deploykit/native").resolve(sha).resolve(System.mapLibraryName(NativeLibrary.NAME)), file);
        assertEquals("rwx------", mode(jenkinsHome.resolve("deploykit")));
        assertEquals("rwx------", mode(jenkinsHome.resolve("deploykit/native")));
        assertEquals("rwx------", mode(dir));
        assertEquals("rwx------", mode(file));
        assertArrayEquals(lib, Files.readAllBytes(file));
        // Nothing else is left in the directory (the temporary file was renamed).
        try (var entries = Files.list(dir)) {
            assertEquals(1, entries.count());
        }
        // A second run keeps the good file as it is.
        Object inode = Files.getAttribute(file, "unix:ino");
        assertEquals(file, NativeLibrary.extract(lib, sha, NativeLibrary.prepare(where)));
        assertEquals(inode, Files.getAttribute(file, "unix:ino"));
    }

    @Test
    void tamperedLibraryOnDiskIsReplacedAtomically() throws IOException {
        Path dir = NativeLibrary.prepare(new NativeLibrary.Location(null, tmp.resolve("native")));
        Path file = NativeLibrary.extract(lib, sha, dir);
        Files.write(file, new byte[] {0x7f, 'E', 'L', 'F', 'e', 'v', 'i', 'l'});
        try (InputStream before = Files.newInputStream(file)) {
            Object inode = Files.getAttribute(file, "unix:ino");
            assertEquals(file, NativeLibrary.extract(lib, sha, dir));
            assertArrayEquals(lib, Files.readAllBytes(file));
            assertEquals(sha, NativeLibrary.sha256(file));
            // Replaced by rename, not rewritten in place: a reader of the old file still sees the old bytes.
            assertNotEquals(inode, Files.getAttribute(file, "unix:ino"));
            assertEquals((byte) 'e', before.readNBytes(5)[4]);
        }
        // A symlink planted in its place is replaced by the real file, its target left alone.
        Path elsewhere = Files.write(tmp.resolve("elsewhere.so"), new byte[] {1, 2, 3});
        Files.delete(file);
        Files.createSymbolicLink(file, elsewhere);
        NativeLibrary.extract(lib, sha, dir);
        assertFalse(Files.isSymbolicLink(file));
        assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(elsewhere));
        assertArrayEquals(lib, Files.readAllBytes(file));
    }

    @Test
    void jarLibraryNotMatchingItsChecksumIsRefused() throws IOException {
        Path dir = NativeLibrary.prepare(new NativeLibrary.Location(null, tmp.resolve("native")));
        byte[] damaged = lib.clone();
        damaged[damaged.length / 2] ^= 1;
        IOException e = assertThrows(IOException.class, () -> NativeLibrary.extract(damaged, sha, dir));
        assertTrue(e.getMessage().contains("checksum mismatch"), e.getMessage());
        try (var entries = Files.list(dir)) {
            assertEquals(0, entries.count(), "nothing written");
        }
    }

    @Test
    void groupOrWorldWritableDirectoryIsRefused() throws IOException {
        for (String perms : new String[] {"rwxrwx---", "rwx---rwx", "rwxrwxrwx"}) {
            Path dir = Files.createDirectory(tmp.resolve("shared-" + perms.replace('-', '_')));
            Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString(perms));
            IOException e = assertThrows(IOException.class, () -> NativeLibrary.prepare(new NativeLibrary.Location(null, dir)));
            assertTrue(e.getMessage().contains("group- or world-writable"), e.getMessage());
            // Below JENKINS_HOME too: a level deploykit made earlier and someone opened up.
            Path jenkinsHome = Files.createDirectory(tmp.resolve("jenkins-" + perms.replace('-', '_')));
            NativeLibrary.Location where = NativeLibrary.location(env(Map.of("JENKINS_HOME", jenkinsHome.toString())), props(), sha);
            NativeLibrary.prepare(where);
            Files.setPosixFilePermissions(jenkinsHome.resolve("deploykit/native"), PosixFilePermissions.fromString(perms));
            assertThrows(IOException.class, () -> NativeLibrary.prepare(where));
        }
        // A symlink to a good directory is not a directory of ours.
        Path real = NativeLibrary.prepare(new NativeLibrary.Location(null, tmp.resolve("real")));
        Path link = Files.createSymbolicLink(tmp.resolve("link"), real);
        assertThrows(IOException.class, () -> NativeLibrary.prepare(new NativeLibrary.Location(null, link)));
    }

    @Test
    void directoryOfAnotherUserIsRefused() throws IOException {
        assumeTrue(Integer.valueOf(0).equals(Files.getAttribute(Path.of("/proc/self"), "unix:uid")), "needs root to give a directory away");
        Path dir = Files.createDirectory(tmp.resolve("theirs"));
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx------"));
        UserPrincipal nobody = dir.getFileSystem().getUserPrincipalLookupService().lookupPrincipalByName("nobody");
        Files.setOwner(dir, nobody);
        IOException e = assertThrows(IOException.class, () -> NativeLibrary.prepare(new NativeLibrary.Location(null, dir)));
        assertTrue(e.getMessage().contains("not by the user"), e.getMessage());
    }

    @Test
    void aLoadFailureNamesItsCauseAndTheWorkaround(@org.junit.jupiter.api.io.TempDir Path tmp) throws IOException {
        // A real failure through the JVM's loader: a file that is no shared library.
        Path bad = tmp.resolve("libdeploykit_jni.so");
        Files.write(bad, "not an ELF file at all".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class, () -> NativeLibrary.loadFile(bad));
        assertTrue(e.getMessage().startsWith("cannot load libdeploykit_jni from " + bad + ": the file is not a shared library"), e.getMessage());
        assertTrue(e.getMessage().contains("Workaround: delete it"), e.getMessage());
        assertNotNull(e.getCause(), "the JVM's own error is kept as the cause");
        // The JVM's words for the other causes (glibc's and the kernel's messages).
        String noexec = NativeLibrary.explain(bad + ": failed to map segment from shared object", bad);
        assertTrue(noexec.contains("noexec") && noexec.contains("-D" + NativeLibrary.DIR_PROPERTY + "="), noexec);
        String glibc = NativeLibrary.explain("/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found (required by " + bad + ")", bad);
        assertTrue(glibc.contains("older than") && glibc.contains("java.library.path"), glibc);
        String arch = NativeLibrary.explain(bad + ": wrong ELF class: ELFCLASS64", bad);
        assertTrue(arch.contains("linux-x86_64") && arch.contains("os.arch="), arch);
        assertTrue(NativeLibrary.explain(null, bad).contains("Workaround"), "some workaround for any message");
    }
}
