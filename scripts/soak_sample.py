"""The soak's sampler and plot (scripts/soak.sh).

    python3 soak_sample.py SERVER_URL SERVER_PID SECONDS OUT.csv
        every 10 s: elapsed seconds, resident memory (MiB), open file descriptors, pool
        connections in use and idle, requests in those 10 s and their p99 (ms), read from the
        server's /metrics (the p99 from its latency histogram's bucket counts)
    python3 soak_sample.py --plot SAMPLES.csv OUT.png
"""
import csv
import sys
import time
import urllib.request


def scrape(url):
    values, buckets = {}, {}
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            if name.startswith("atoms_auth_http_request_duration_seconds_bucket"):
                le = name.split('le="')[1].split('"')[0]
                le = float("inf") if le == "+Inf" else float(le)
                buckets[le] = buckets.get(le, 0.0) + float(value)
            else:
                values[name] = float(value)
    return values, buckets


def p99(before, after):
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return 0.0, 0
    for le, count in deltas:
        if count >= 0.99 * total:
            return le * 1000.0, int(total)
    return float("inf"), int(total)


def sample(url, pid, seconds, out):
    start = time.time()
    _, previous = scrape(url)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "rss_mib", "open_fds", "pool_in_use", "pool_idle", "requests", "p99_ms"])
        while time.time() - start < seconds:
            time.sleep(10)
            values, buckets = scrape(url)
            latency, requests = p99(previous, buckets)
            previous = buckets
            pool = lambda state: values.get(f'atoms_auth_storage_pool_connections{{state="{state}"}}', 0)
            writer.writerow([
                round(time.time() - start),
                round(values.get("process_resident_memory_bytes", 0) / 2**20, 1),
                int(values.get("process_open_fds", 0)),
                int(pool("in_use")),
                int(pool("idle")),
                requests,
                round(latency, 1),
            ])
            f.flush()


def plot(samples, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(samples)))
    minutes = [int(r["seconds"]) / 60 for r in rows]
    series = [
        ("rss_mib", "resident memory (MiB)"),
        ("open_fds", "open file descriptors"),
        ("pool_in_use", "pool connections in use"),
        ("p99_ms", "p99 of each 10 s (ms, histogram bucket)"),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 10), sharex=True)
    for ax, (column, label) in zip(axes, series):
        ax.plot(minutes, [float(r[column]) for r in rows])
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle("atoms-auth soak: mixed load on PostgreSQL, sampled every 10 s")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    if sys.argv[1] == "--plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        sample(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
