package org.deploykit;

import java.io.File;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** The command line of a second JVM for tests that outlive one: same classes, same native library. */
public final class ChildJvm {
    private ChildJvm() {}

    /** {@code java -Xcheck:jni -cp … MAIN ARGS…}, with this JVM's library properties. */
    public static List<String> command(Class<?> main, String... args) throws URISyntaxException {
        // Classes from where this JVM loaded them (the JUnit launcher's class path is its own jar only).
        String cp = Path.of(main.getProtectionDomain().getCodeSource().getLocation().toURI()) + File.pathSeparator
                + Path.of(Spool.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xcheck:jni"));
        for (String p : new String[] {"java.library.path", NativeLibrary.DIR_PROPERTY}) {
            if (System.getProperty(p) != null) {
                cmd.add("-D" + p + "=" + System.getProperty(p));
            }
        }
        cmd.add("-cp");
        cmd.add(cp);
        cmd.add(main.getName());
        cmd.addAll(List.of(args));
        return cmd;
    }
}
