// Summary statistics of latency samples. Samples are nanoseconds (numbers);
// summaries are microseconds rounded to 0.1 µs.

const toMicros = (ns) => Math.round(ns / 100) / 10;

/** The median of numbers sorted ascending. */
function sortedMedian(sorted) {
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** The median of any numbers (e.g. ops/s of repeated rounds). */
export function median(values) {
  if (values.length === 0) throw new Error('no values');
  return sortedMedian(Float64Array.from(values).sort());
}

/** { n, median, p99, mean } in µs; p99 by the nearest-rank method. */
export function summarize(samplesNs) {
  if (samplesNs.length === 0) throw new Error('no samples to summarize');
  const sorted = Float64Array.from(samplesNs).sort();
  const p99 = sorted[Math.max(0, Math.ceil(0.99 * sorted.length) - 1)];
  const mean = sorted.reduce((sum, x) => sum + x, 0) / sorted.length;
  return { n: sorted.length, median: toMicros(sortedMedian(sorted)), p99: toMicros(p99), mean: toMicros(mean) };
}
