package org.deploykit;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;

/**
 * Loads {@code libdeploykit_jni}: from {@code java.library.path} if it is there,
 * else from the jar itself ({@code /native/<os>-<arch>/libdeploykit_jni.so},
 * extracted to a temporary file).
 */
public final class NativeLibrary {
    /** The library's base name, as {@link System#loadLibrary} wants it. */
    public static final String NAME = "deploykit_jni";

    private static String loadedFrom;

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
            String resource = "/native/" + classifier() + "/" + System.mapLibraryName(NAME);
            try (InputStream in = NativeLibrary.class.getResourceAsStream(resource)) {
                if (in == null) {
                    UnsatisfiedLinkError e = new UnsatisfiedLinkError(
                            "lib" + NAME + " is neither on java.library.path nor in the jar at " + resource);
                    e.addSuppressed(notOnPath);
                    throw e;
                }
                Path tmp = Files.createTempFile("libdeploykit_jni", ".so");
                tmp.toFile().deleteOnExit();
                Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
                System.load(tmp.toAbsolutePath().toString());
                loadedFrom = "jar:" + resource;
            } catch (IOException io) {
                UnsatisfiedLinkError e = new UnsatisfiedLinkError("extracting " + resource + ": " + io);
                e.addSuppressed(notOnPath);
                throw e;
            }
        }
    }

    /** Where the library came from: {@code java.library.path} or {@code jar:/native/…}; null before loading. */
    public static synchronized String loadedFrom() {
        return loadedFrom;
    }

    /** The jar directory for this platform, e.g. {@code linux-x86_64}. */
    static String classifier() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        String o = os.contains("linux") ? "linux" : os.contains("mac") ? "macos" : os.replaceAll("[^a-z0-9]", "");
        String a = arch.equals("amd64") || arch.equals("x86_64") ? "x86_64" : arch.equals("arm64") ? "aarch64" : arch;
        return o + "-" + a;
    }
}
