import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.util.List;

/**
 * Starts mongo-java-server for the integration tests: in-memory backend, oplog enabled (without it change
 * streams stay empty), bound to 127.0.0.1 on the given port, reporting MongoDB 5.0 (wire version 13, the
 * oldest the Node driver 7 accepts). Prints one ready line, then serves until the process is terminated.
 */
public final class Launcher {
    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: Launcher PORT");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        MongoServer server = new MongoServer(new MemoryBackend().version(new ReportedVersion()));
        server.enableOplog();
        server.bind("127.0.0.1", port);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("mongo-java-server ready on 127.0.0.1:" + port);
        System.out.flush();
        Thread.currentThread().join();
    }

    /** The stock MONGO_5_0 constant still reports wire version 8, which the Node driver 7 refuses. */
    private static final class ReportedVersion implements MongoVersion {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(5, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 13;
        }
    }
}
