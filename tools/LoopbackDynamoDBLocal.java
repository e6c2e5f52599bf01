// Starts DynamoDB Local listening on 127.0.0.1 only. Its own main (ServerRunner) has no option
// for the bind address and Jetty's Server(port) listens on every interface; this launcher builds
// the same server from the same command line, sets the host of its Jetty connectors to the
// loopback address, and starts it. Run in Java's single-file source mode (JDK 11+):
//   java -cp DynamoDBLocal.jar tools/LoopbackDynamoDBLocal.java -port 8001 -sharedDb ...
// Any telemetry is left off: this launcher never sets it up (pass -disableTelemetry as well).

import com.amazonaws.services.dynamodbv2.local.main.ServerRunner;
import com.amazonaws.services.dynamodbv2.local.server.DynamoDBProxyServer;
import java.lang.reflect.Field;
import org.eclipse.jetty.server.AbstractNetworkConnector;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;

public class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        String host = System.getProperty("stagetrack.bindHost", "127.0.0.1");
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server jetty = (Server) field.get(proxy);
        int bound = 0;
        for (Connector connector : jetty.getConnectors()) {
            if (connector instanceof AbstractNetworkConnector) {
                ((AbstractNetworkConnector) connector).setHost(host);
                bound++;
            }
        }
        if (bound == 0) {
            throw new IllegalStateException("no network connector to bind to " + host);
        }
        proxy.start();
        System.err.println("DynamoDB Local listening on " + host + " only");
        proxy.join();
    }
}
