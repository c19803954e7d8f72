// Entry point (`npm start`): validate the configuration first (fast, clear failure), then load
// Better Auth and the database, run migrations, listen; graceful shutdown on SIGINT/SIGTERM.
import { ConfigError, loadConfig, type Config } from "./config.js";

async function main() {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`auth-service: refusing to start: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
  const { startServer } = await import("./service.js");
  const service = await startServer(config);
  console.log(`auth-service listening on ${service.url} (${config.env}, database: ${service.database.kind})`);
  if (service.mailer.outboxDir) {
    console.log(`auth-service: no SMTP_URL, mails are kept in ${service.mailer.outboxDir}: open ${config.baseURL}/dev/mailbox`);
  }
  const shutdown = async (signal: string) => {
    console.log(`auth-service: ${signal} received, shutting down`);
    const timer = setTimeout(() => process.exit(1), 10_000);
    timer.unref();
    await service.close();
    process.exit(0);
  };
  process.once("SIGINT", () => void shutdown("SIGINT"));
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
}

main().catch((err) => {
  console.error("auth-service: failed to start:", err);
  process.exit(1);
});
