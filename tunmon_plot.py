"""`tunmon --plot STATSFILE > graph.svg`: RX/TX rate per device over time, as one SVG.

Reads the statistics stream written with <format>json</format> (FILE.1, the rotated older
half, first if it exists), and draws one panel per device on a shared time axis: RX as a
filled step curve, TX as a line, the device's state as background bands (silent, down, held,
absent, link down), and the actions, retries and restores as marked vertical lines.  Steps,
because each statistics line is the average over its period: the picture shows exactly what
was measured, and an outage has sharp edges.

The SVG is self-contained (no scripts, fonts or links) and the same bytes come out of
CPython and the MicroPython unix port: coordinates are rounded through integers.
Times are labelled in local time (the TZ environment variable).
"""
import json
import sys
import time

from tunmon_status import format_amount
from tunmon_xml import os_error_text

WIDTH = 960
LEFT = 84               # room for the rate labels
RIGHT = 24
TOP = 114               # title, time range, legend and the first device's name
PANEL = 150             # height of one device's plot area
GAP = 46                # between panels: the next device's name and summary
BOTTOM = 26             # time labels
PLOT_WIDTH = WIDTH - LEFT - RIGHT

RX_COLOR = "#1f6fb4"
TX_COLOR = "#e8710a"
ACTION_COLOR = "#c62828"
RESTORE_COLOR = "#2e7d32"
STATE_COLORS = (("silent", "#fff3c4", "silent"), ("down", "#f8c9c9", "down"),
                ("held", "#e3d7f3", "held (underlay down)"),
                ("absent", "#dddddd", "absent / link down"), ("link down", "#dddddd", None))
STATE_FILL = {state: color for state, color, label in STATE_COLORS}

TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800)
RATE_UNITS = (("B/s", 1.0), ("kB/s", 1e3), ("MB/s", 1e6), ("GB/s", 1e9))
LATEST = 1e10       # seconds since 1970, in the year 2286: a time past it is no statistic
MAX_RATE = 1e15     # bytes a second (8 Pbit/s)


def error(message):
    sys.stderr.write("error: " + message + "\n")


def num(value):
    """A coordinate with one decimal, formatted through an integer: identical bytes on
    CPython and MicroPython, whose float formatting differs in the last digit."""
    tenths = int(value * 10 + (0.5 if value >= 0 else -0.5))
    sign = "-" if tenths < 0 else ""
    tenths = abs(tenths)
    if tenths % 10 == 0:
        return "%s%d" % (sign, tenths // 10)
    return "%s%d.%d" % (sign, tenths // 10, tenths % 10)


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;")


# ---------------------------------------------------------------------------------------------
# Reading the statistics

class Series:
    """One device's samples (end time, period, rx rate, tx rate, state) and events."""

    def __init__(self, name):
        self.name = name
        self.samples = []
        self.events = []        # (time, kind, step or state)


def read_stats(paths):
    """{device: Series} and the device order from JSON stats lines; other lines are skipped
    and counted.  Raises OSError for the first path only (the rotated .1 is optional)."""
    series = {}
    order = []
    skipped = 0
    for index, path in enumerate(paths):
        try:
            f = open(path, "rb")    # bytes: a line that is not UTF-8 is skipped, not fatal
        except OSError:
            if index == len(paths) - 1:
                raise
            continue
        with f:
            for line in f:
                record = parse_line(line)
                if record is None:
                    skipped += line.strip() != b""
                    continue
                name = record["device"]
                if name not in series:
                    series[name] = Series(name)
                    order.append(name)
                add_record(series[name], record)
    return series, order, skipped


def parse_line(line):
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        record = json.loads(line.decode("utf-8"))
        if isinstance(record["device"], str) and measure(record["time"], LATEST) > 0 and \
                measure(record["period"], LATEST) > 0:
            return record
    # RuntimeError: nested past the recursion limit (MicroPython: MemoryError)
    except (ValueError, KeyError, TypeError, RuntimeError, MemoryError):
        pass
    return None


def measure(value, high):
    """A number from a line as a float from 0 up to `high`; ValueError for anything else: a
    string, a bool, NaN, or 1e999, with which the scales would never end."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
        raise ValueError(value)
    return float(value)


def add_record(series, record):
    end = float(record["time"])
    series.samples.append((end, float(record["period"]), rate(record.get("rx_rate")),
                           rate(record.get("tx_rate")), str(record.get("state", "up"))))
    events = record.get("events")
    for event in events if isinstance(events, list) else ():
        try:
            kind = event["event"]
            detail = event.get("state") if kind == "state" else event.get("step")
            series.events.append((measure(event["time"], LATEST), kind, detail))
        except (KeyError, TypeError, ValueError, AttributeError):
            pass


def rate(value):
    """A rate from a line, None for a missing one (null: the device was absent) or garbage."""
    try:
        return measure(value, MAX_RATE)
    except ValueError:
        return None


def state_spans(series):
    """[(start, end, state)] from the samples, split at the recorded state changes."""
    spans = []
    changes = sorted([(at, detail) for at, kind, detail in series.events if kind == "state"],
                     key=lambda change: change[0])
    state = None
    for end, period, rx, tx, line_state in series.samples:
        start = end - period
        if state is None:
            state = line_state
        for at, new_state in changes:
            if start < at <= end:
                add_span(spans, start, at, state)
                start = at
                state = new_state
        add_span(spans, start, end, line_state)
        state = line_state
    return spans


def add_span(spans, start, end, state):
    if spans and spans[-1][2] == state and abs(spans[-1][1] - start) < 1e-6:
        spans[-1] = (spans[-1][0], end, state)
    elif end > start:
        spans.append((start, end, state))


# ---------------------------------------------------------------------------------------------
# Scales

def local_offset(seconds):
    """Seconds east of UTC at `seconds`, from localtime (MicroPython has no tm_gmtoff)."""
    local = time.localtime(int(seconds))
    of_day = local[3] * 3600 + local[4] * 60 + local[5]
    return (of_day - int(seconds) % 86400 + 43200) % 86400 - 43200


def time_ticks(start, end):
    """Tick times on round local clock values, about 6 to 10 of them, and their labels."""
    span = max(end - start, 1.0)
    step = TIME_STEPS[-1]
    for candidate in TIME_STEPS:
        if span / candidate <= 9:
            step = candidate
            break
    offset = local_offset(start)
    first = int((start + offset) // step + 1) * step - offset
    if first - step >= start - 1e-6:
        first -= step
    ticks = []
    at = first
    while at <= end + 1e-6:
        ticks.append((at, time_label(at, step)))
        at += step
    return ticks


def time_label(seconds, step):
    """Clock time at the step's precision; at local midnight (and for whole days) the date."""
    local = time.localtime(int(seconds))
    if step >= 86400 or (step >= 60 and local[3] == local[4] == 0):
        return "%02d-%02d" % (local[1], local[2])
    if step >= 60:
        return "%02d:%02d" % (local[3], local[4])
    return "%02d:%02d:%02d" % (local[3], local[4], local[5])


def date_time(seconds):
    local = time.localtime(int(seconds))
    return "%04d-%02d-%02d %02d:%02d:%02d" % local[:6]


def rate_scale(peak):
    """(top, step, unit name, unit size): gridlines at round values in one readable unit."""
    name, size = RATE_UNITS[0]
    for unit_name, unit_size in RATE_UNITS:
        if peak >= unit_size:
            name, size = unit_name, unit_size
    scaled = peak / size
    if scaled <= 0:
        return 1.0, 0.25, name, size        # an idle device: an axis from 0 to 1 B/s
    # The smallest step of 1, 2 or 5 times a power of ten that needs at most 4 gridlines.
    power = 0.01
    while True:
        for factor in (1, 2, 5):
            step = power * factor
            if step * 4 >= scaled:
                divisions = int(scaled / step - 1e-9) + 1
                return step * divisions, step, name, size
        power *= 10


def rate_label(value, step):
    """0, 2.5, 10: as few decimals as the gridline step needs."""
    if step >= 1 or abs(value - int(value + 0.5)) < 1e-9:
        return "%d" % int(value + 0.5)
    hundredths = int(value * 100 + 0.5)
    text = "%d.%02d" % (hundredths // 100, hundredths % 100)
    return text.rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------
# Drawing

class Canvas:
    def __init__(self):
        self.parts = []

    def add(self, text):
        self.parts.append(text)

    def text(self, x, y, content, extra=""):
        self.add('<text x="%s" y="%s"%s>%s</text>' % (num(x), num(y), extra, escape(content)))

    def line(self, x1, y1, x2, y2, extra):
        self.add('<line x1="%s" y1="%s" x2="%s" y2="%s" %s/>'
                 % (num(x1), num(y1), num(x2), num(y2), extra))

    def rect(self, x, y, width, height, extra):
        self.add('<rect x="%s" y="%s" width="%s" height="%s" %s/>'
                 % (num(x), num(y), num(width), num(height), extra))


def step_runs(samples, column):
    """Contiguous runs of [(start, end, value)]: a missing line or value breaks a run."""
    runs = []
    run = []
    previous_end = None
    for sample in samples:
        end, period = sample[0], sample[1]
        value = sample[column]
        start = end - period
        # A gap of more than half a period means lines are missing (tunmon was stopped).
        if value is None or (previous_end is not None and start - previous_end > period / 2):
            if run:
                runs.append(run)
            run = []
        if value is not None:
            if previous_end is not None and start < previous_end:
                start = previous_end      # overlapping lines: draw each instant once
            run.append((start, end, value))
        previous_end = end
    if run:
        runs.append(run)
    return runs


def step_path(run, x_of, y_of, baseline=None):
    """SVG path data of a step curve; closed down to `baseline` for a filled area."""
    points = []
    for start, end, value in run:
        y = y_of(value)
        if points and points[-1][1] == y:
            points[-1] = (x_of(end), y)     # the same level continues: no new corner
        else:
            points.append((x_of(start), y))
            points.append((x_of(end), y))
    if baseline is not None:
        points = [(points[0][0], baseline)] + points + [(points[-1][0], baseline)]
    return "M" + " L".join("%s %s" % (num(x), num(y)) for x, y in points) + (
        " Z" if baseline is not None else "")


def draw_legend(canvas, y):
    x = LEFT
    canvas.rect(x, y - 9, 18, 10, 'fill="%s" fill-opacity="0.35" stroke="%s"'
                % (RX_COLOR, RX_COLOR))
    canvas.text(x + 24, y, "RX")
    x += 58
    canvas.line(x, y - 4, x + 18, y - 4, 'stroke="%s" stroke-width="2"' % TX_COLOR)
    canvas.text(x + 24, y, "TX")
    x += 58
    for state, color, label in STATE_COLORS:
        if label is None:
            continue
        canvas.rect(x, y - 9, 18, 10, 'fill="%s" stroke="#999999" stroke-width="0.5"' % color)
        canvas.text(x + 24, y, label)
        x += 34 + 7 * len(label)
    canvas.line(x + 6, y - 11, x + 6, y + 2, 'stroke="%s" stroke-width="1.5"' % ACTION_COLOR)
    canvas.text(x + 14, y, "action / retry", ' fill="%s"' % ACTION_COLOR)
    x += 120
    canvas.line(x + 6, y - 11, x + 6, y + 2, 'stroke="%s" stroke-width="1.5"' % RESTORE_COLOR)
    canvas.text(x + 14, y, "restore", ' fill="%s"' % RESTORE_COLOR)


def summary(series):
    counts = {}
    for at, kind, detail in series.events:
        counts[kind] = counts.get(kind, 0) + 1
    peaks = [max([s[column] for s in series.samples if s[column] is not None] or [0.0])
             for column in (2, 3)]
    return "peak RX %s, TX %s; %s, %s, %s" % (
        format_amount(peaks[0], "B/s"), format_amount(peaks[1], "B/s"),
        plural(counts.get("action", 0), "action"),
        plural(counts.get("retry", 0), "retry", "retries"),
        plural(counts.get("restore", 0), "restore"))


def plural(count, word, words=None):
    return "%d %s" % (count, word if count == 1 else (words or word + "s"))


def draw_panel(canvas, series, top, start, end, ticks, x_of):
    bottom = top + PANEL
    # One text element, so the renderer puts the summary right after the name, whatever its
    # width in the font it has.
    canvas.add('<text x="%s" y="%s"><tspan font-size="14" font-weight="bold">%s</tspan>'
               '<tspan dx="10" fill="#555555">%s</tspan></text>'
               % (num(LEFT), num(top - 10), escape(series.name), escape(summary(series))))
    canvas.rect(LEFT, top, PLOT_WIDTH, PANEL, 'fill="#ffffff" stroke="none"')
    for span_start, span_end, state in state_spans(series):
        if state in STATE_FILL:
            canvas.rect(x_of(span_start), top, x_of(span_end) - x_of(span_start), PANEL,
                        'fill="%s"' % STATE_FILL[state])

    peak = 0.0
    for sample in series.samples:
        for value in (sample[2], sample[3]):
            if value is not None and value > peak:
                peak = value
    top_value, step, unit, size = rate_scale(peak)

    def y_of(value):
        return bottom - value / size / top_value * PANEL

    divisions = int(top_value / step + 0.5)
    for k in range(divisions + 1):
        value = step * k
        y = bottom - PANEL * k / divisions
        canvas.line(LEFT, y, LEFT + PLOT_WIDTH, y,
                    'stroke="#cccccc" stroke-width="%s"' % ("1" if k == 0 else "0.5"))
        # The unit once, on the top label, keeps the others short.
        canvas.text(LEFT - 6, y + 4, rate_label(value, step) +
                    (" " + unit if k == divisions else ""), ' text-anchor="end"')
    for at, label in ticks:
        canvas.line(x_of(at), top, x_of(at), bottom, 'stroke="#cccccc" stroke-width="0.5"')

    for run in step_runs(series.samples, 2):
        canvas.add('<path d="%s" fill="%s" fill-opacity="0.35" stroke="%s" stroke-width="1.2"/>'
                   % (step_path(run, x_of, y_of, bottom), RX_COLOR, RX_COLOR))
    for run in step_runs(series.samples, 3):
        canvas.add('<path d="%s" fill="none" stroke="%s" stroke-width="1.8"/>'
                   % (step_path(run, x_of, y_of), TX_COLOR))

    # Labels go in the first of three rows where they overlap no earlier label.
    row_ends = [-1e9, -1e9, -1e9]
    for at, kind, detail in sorted(series.events, key=lambda event: event[0]):
        if kind not in ("action", "retry", "restore") or not start <= at <= end:
            continue
        color = RESTORE_COLOR if kind == "restore" else ACTION_COLOR
        x = x_of(at)
        canvas.line(x, top, x, bottom, 'stroke="%s" stroke-width="1.5" stroke-dasharray="4 3"'
                    % color)
        text = "restore" if kind == "restore" else "%s %s" % (kind, detail)
        for row in range(len(row_ends)):
            if x + 3 > row_ends[row]:
                canvas.text(x + 3, top + 12 + 13 * row, text,
                            ' fill="%s" font-size="11"' % color)
                row_ends[row] = x + 3 + 6.5 * len(text) + 4
                break
    canvas.rect(LEFT, top, PLOT_WIDTH, PANEL, 'fill="none" stroke="#888888"')


def render(series_by_name, order):
    """The SVG text for the parsed statistics."""
    start = None
    end = None
    for name in order:
        for sample in series_by_name[name].samples:
            if start is None or sample[0] - sample[1] < start:
                start = sample[0] - sample[1]
            if end is None or sample[0] > end:
                end = sample[0]
    span = max(end - start, 1.0)

    def x_of(at):
        return LEFT + (at - start) / span * PLOT_WIDTH

    ticks = time_ticks(start, end)
    height = TOP + len(order) * (PANEL + GAP) - GAP + BOTTOM
    canvas = Canvas()
    canvas.add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
               'viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">'
               % (WIDTH, height, WIDTH, height))
    canvas.add("<title>tunmon: RX/TX rate per device</title>")
    canvas.rect(0, 0, WIDTH, height, 'fill="#ffffff"')
    canvas.text(LEFT, 26, "tunmon: RX/TX rate per device", ' font-size="17" font-weight="bold"')
    canvas.text(LEFT, 46, "%s to %s (local time), rates in bytes per second"
                % (date_time(start), date_time(end)), ' fill="#555555"')
    draw_legend(canvas, 70)
    for index, name in enumerate(order):
        top = TOP + index * (PANEL + GAP)
        draw_panel(canvas, series_by_name[name], top, start, end, ticks, x_of)
    axis_y = TOP + len(order) * (PANEL + GAP) - GAP + 16
    for at, label in ticks:
        # About 7 px per character at 12 px: a label that would leave the picture is left out.
        if x_of(at) + 3.5 * len(label) <= WIDTH:
            canvas.text(x_of(at), axis_y, label, ' text-anchor="middle"')
    canvas.add("</svg>")
    return "\n".join(canvas.parts) + "\n"


def plot(stats_path, out):
    """Write the SVG for `stats_path` to `out`: 0 done, 1 nothing to plot yet, 2 cannot read."""
    try:
        series, order, skipped = read_stats([stats_path + ".1", stats_path])
    except OSError as err:
        error("cannot read %s: %s" % (stats_path, os_error_text(err)))
        return 2
    if not order:
        if skipped:
            error("%s: no JSON statistics lines (the plot reads <stats><format>json"
                  "</format>)" % stats_path)
            return 2
        error("%s: no statistics yet" % stats_path)
        return 1
    if skipped:
        sys.stderr.write("warning: %s: skipped %d lines that are not JSON statistics\n"
                         % (stats_path, skipped))
    out.write(render(series, order))
    return 0
