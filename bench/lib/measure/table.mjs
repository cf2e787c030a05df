// Plain-text tables for benchmark reports.

/**
 * Formats rows (arrays of cells; numbers are right-aligned, text
 * left-aligned) under a header row, with a rule below the header.
 */
export function formatTable(headers, rows) {
  const cells = rows.map((row) => row.map((cell) => (cell === undefined || cell === null ? '-' : String(cell))));
  const numeric = headers.map((_, column) => rows.every((row) => typeof row[column] !== 'string' || row[column] === '-'));
  const widths = headers.map((header, column) => Math.max(header.length, ...cells.map((row) => row[column].length)));
  const line = (row) =>
    row
      .map((cell, column) => (numeric[column] && column > 0 ? cell.padStart(widths[column]) : cell.padEnd(widths[column])))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}
