"""How long the viewer page's maths takes in the browser (service/static/ui/math.js in headless Chromium).

The page runs a PCA over every patch of every image shown and, per hovered patch, one cosine
similarity against all of them. This times both on patch matrices the size of real models' output
(a decaying spectrum of rank 64 plus noise, float32, deterministic), so the README can say what a
ViT-H/14 page costs. Needs Debian's chromium and chromium-driver and selenium (the dev extra).

    python -m bench.ui_math                      # ViT-Tiny/4 and ViT-H/14 sizes, 1 to 8 images
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import tempfile
import threading

from bench.host import host_line
from service.ui import STATIC_DIR

SIZES = {"vit-tiny/4 (32 px)": (64, 192), "vit-h/14 (224 px)": (256, 1280)}

SCRIPT = """
const [cases, done] = [arguments[0], arguments[arguments.length - 1]];
import("./math.js").then((M) => {
  const out = [];
  for (const [m, d, reps] of cases) {
    let s = 7;
    const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296 - 0.5; };
    const r = 64, a = Float64Array.from({ length: m * r }, rnd), b = Float64Array.from({ length: r * d }, rnd);
    const x = new Float32Array(m * d);
    for (let i = 0; i < m; i++) for (let k = 0; k < r; k++) {
      const w = a[i * r + k] / (1 + 0.2 * k);
      for (let j = 0; j < d; j++) x[i * d + j] += w * b[k * d + j];
    }
    for (let i = 0; i < x.length; i++) x[i] += 0.05 * rnd();
    const times = [], hovers = [];
    let p;
    for (let rep = 0; rep < reps; rep++) {
      let t = performance.now();
      p = M.pca(x, m, d, 3);
      times.push(performance.now() - t);
      const u = M.unitRows(x, m, d);
      t = performance.now();
      M.cosineTo(u, m, d, rep % m);
      hovers.push(performance.now() - t);
    }
    out.push({ m, d, pca_ms: Math.min(...times), hover_ms: Math.min(...hovers), iterations: p.iterations,
               converged: p.converged });
  }
  done(out);
}, (e) => done(String(e)));
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_static() -> tuple[http.server.ThreadingHTTPServer, str]:
    """The page's folder over loopback (modules do not load from file://)."""
    handler = functools.partial(QuietHandler, directory=str(STATIC_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--reps", type=int, default=3, help="runs per case; the fastest is reported")
    args = parser.parse_args()
    from selenium import webdriver

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise SystemExit("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    server, url = serve_static()
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        driver.set_script_timeout(600)
        driver.get(url + "/index.html")
        print(host_line())
        print("| model | images | patches x dim | PCA ms | sweeps | one hover ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, (tokens, dim) in SIZES.items():
            cases = [[n * tokens, dim, args.reps] for n in args.images]
            rows = driver.execute_async_script(SCRIPT, cases)
            if isinstance(rows, str):
                raise SystemExit(f"the page's maths failed: {rows}")
            for n, row in zip(args.images, rows, strict=True):
                if not row["converged"]:
                    raise SystemExit(f"the PCA did not converge: {json.dumps(row)}")
                print(f"| {name} | {n} | {row['m']} x {row['d']} | {row['pca_ms']:.0f} | {row['iterations']} | "
                      f"{row['hover_ms']:.1f} |")  # fmt: skip
    finally:
        driver.quit()
        server.shutdown()


if __name__ == "__main__":
    main()
