// One section of docs/benchmarks.md from a TypeScript benchmark, in the one format that
// scripts/bench_report.py writes: this collects the title, baseline, tables and text, then
// hands them to that script as JSON (it adds the machine line and the load average after).
//
//   const report = new Report("Sign-in capacity", { baseline: "scrypt, same run" });
//   report.table(["hash", "verifications/s"], rows);
//   report.text("How to read it ...");
//   report.write(reportPath());   // undefined: print only
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
type Cell = string | number;
type Part = { text: string } | { headers: string[]; rows: Cell[][]; caption?: string };

/** The value of `--name` on the command line, or undefined. */
export function argValue(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : undefined;
}

export function numberArg(name: string, fallback: number): number {
  const value = argValue(name);
  return value === undefined ? fallback : Number(value);
}

/** `--report PATH`: where `make bench` wants this run's section. */
export function reportPath(): string | undefined {
  return argValue("report");
}

/** The command as a reader retypes it from the repository root (without `--report PATH`). */
function invokedCommand(): string {
  const args = process.argv.slice(2);
  const at = args.indexOf("--report");
  if (at >= 0) args.splice(at, 2);
  const where = path.relative(REPO, process.cwd()) || ".";
  const script = process.env.npm_lifecycle_event;
  const run = script
    ? `npm run ${script}${args.length ? " -- " + args.join(" ") : ""}`
    : ["npx tsx", path.relative(process.cwd(), process.argv[1]!), ...args].join(" ");
  return where === "." ? run : `cd ${where} && ${run}`;
}

export class Report {
  private readonly parts: Part[] = [];
  private readonly started = new Date().toISOString();
  private readonly loadBefore = os.loadavg().map((value) => value.toFixed(2)).join(" / ");

  constructor(
    private readonly title: string,
    private readonly options: { baseline: string; command?: string },
  ) {}

  text(markdown: string): void {
    this.parts.push({ text: markdown });
  }

  table(headers: string[], rows: Cell[][], caption?: string): void {
    this.parts.push({ headers, rows, caption });
  }

  /** Print the section, and write it to `file` when given (relative to the current folder). */
  write(file: string | undefined): void {
    const spec = {
      title: this.title,
      baseline: this.options.baseline,
      command: this.options.command ?? invokedCommand(),
      runtime: `Node ${process.version}`,
      started: this.started,
      load_before: this.loadBefore,
      parts: this.parts,
    };
    const args = [path.join(REPO, "scripts", "bench_report.py"), ...(file ? ["--out", path.resolve(file)] : [])];
    const result = spawnSync(process.env.PYTHON ?? "python3", args, { input: JSON.stringify(spec), stdio: ["pipe", "inherit", "inherit"] });
    if (result.status !== 0) throw new Error(`scripts/bench_report.py failed (${result.error?.message ?? `exit ${result.status}`})`);
  }
}
