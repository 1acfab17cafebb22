"""The one markdown table writer (evaluation, sweeps, README numbers)."""


def markdown(header, rows):
  """header: column names; rows: lists of cells (str, or numbers shown with one decimal)."""
  cell = lambda v: f'{v:.1f}' if isinstance(v, float) else str(v)
  bad = [row[0] if row else row for row in rows if len(row) != len(header)]
  if bad:  # a column added to the cells but not to the header shifts every cell after it
    raise ValueError(f'table rows {bad} do not have the header\'s {len(header)} cells')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def metrics_table(rows, columns, first='category'):
  """rows: {name: {metric: value}} -> markdown; '–' where a metric is missing."""
  return markdown([first, *columns], [
      [name] + [float(m[c]) if isinstance(m.get(c), (int, float)) else m.get(c, '–')
                for c in columns] for name, m in rows.items()])
