"""A reference model of tunmon's event rules, written from the issue 2 text alone.

This is deliberately NOT tunmon's Monitor: it keeps exact fractions instead of floats, walks
the silence one age at a time, and remembers what fired in a set instead of comparing ages
before and after a tick.  It is meant to be read next to the issue text:

  * Tick k is at k x interval.  The first readable snapshot is the baseline: every device starts
    with age 0, as if traffic had just been seen.
  * Traffic between two readings: RX bytes or RX packets increased.  A decrease of either is a
    reset: the new values become the baseline and count as traffic only if the new RX packets
    are > 0.  An absent device is silent; when it reappears "the same reset rule applies": the
    values it comes back with become the baseline and count as traffic only if RX packets > 0,
    even when they equal the values it left with (REAPPEAR_IS_RESET below).  Real counters
    have bytes >= packets, which the generator keeps: with 0 bytes and some packets after a
    reset, tunmon's noise threshold (issue 5) says silent while the issue 2 text says traffic.
  * An unreadable tick judges nobody: ages do not advance (the ticks up to it never count).
    Skipped ticks (`#tick N`) do count: the next judged tick advances ages by all of them.
  * Age: ticks since the last traffic.  Silent seconds = age x interval.
  * action: once per silent spell, at the first judged tick where age >= its tick count.
  * retry: L = largest action tick count (0 without actions); entry with period P fires at a
    judged tick whenever the silence passed one or more of the ages L+P, L+2P, ... since the
    previous judged tick (once per tick per entry, however many it passed).
  * down: an action or retry fired in this spell.  restore: traffic on a down device; every
    restore_dev script gets (device, silent seconds of the spell that ended = the age before
    this tick).  A spell that never fired anything is no restore.
  * post_restore_any: once per tick with restores, every script gets the restored devices'
    names in config order.
  * hotplug on: every event (each action, retry, restore, post_restore_any) is followed by one
    `/sbin/hotplug-call tunmon` run.
  * Output order within a tick: devices in config order; for one device its actions in config
    order, then its retries in config order, or its restore; the post_restore_any last.

Held devices (issue 5, underlay dependencies) are not modelled yet: `Model.held()` is the hook.
It returns False; when held devices exist it must say whether a device's ladder is held at a
tick, and `check_invariants(..., held=...)` already checks that nothing fires for one.

The model runs on CPython only (fractions); it never imports tunmon.
"""
import math
from fractions import Fraction

REAPPEAR_IS_RESET = True
HOTPLUG_ARGV = ["/sbin/hotplug-call", "tunmon"]


def exact(text_or_number):
    """An exact Fraction from a decimal string like '2.5' or a number."""
    if isinstance(text_or_number, Fraction):
        return text_or_number
    return Fraction(str(text_or_number))


TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds_of(text):
    """'15', '2.5', '4m', '0.5h' -> exact Fraction of seconds (the model's own parser)."""
    text = text.strip()
    scale = 1
    if text and text[-1] in TIME_UNITS:
        scale = TIME_UNITS[text[-1]]
        text = text[:-1]
    return Fraction(text) * scale


def ticks_of(seconds, interval):
    """Round half up of seconds / interval, at least 1 tick."""
    ratio = Fraction(seconds) / Fraction(interval)
    return max(1, math.floor(ratio + Fraction(1, 2)))


def fmt(seconds):
    """Seconds as tunmon prints them: an integer when whole, else up to 3 decimals."""
    seconds = Fraction(seconds)
    if seconds.denominator == 1:
        return str(seconds.numerator)
    millis = seconds * 1000
    whole_millis = int(millis + Fraction(1, 2))    # round half up to a millisecond
    if whole_millis % 1000 == 0:
        return str(whole_millis // 1000)
    text = "%d.%03d" % (whole_millis // 1000, whole_millis % 1000)
    return text.rstrip("0").rstrip(".")



class ModelConfig:
    """What the model needs from a config, in plain values.

    interval: seconds (anything Fraction() takes); actions: [(seconds, argv)];
    retries: [(period seconds, argv)]; restores, posts: [argv]; argv already resolved
    (absolute first word when it was a relative path).
    """

    def __init__(self, devices, interval, actions=(), retries=(), restores=(), posts=(),
                 hotplug=False):
        self.devices = list(devices)
        self.interval = exact(interval)
        self.actions = [(ticks_of(exact(sec), self.interval), list(argv)) for sec, argv in actions]
        self.retries = [(ticks_of(exact(sec), self.interval), list(argv)) for sec, argv in retries]
        self.restores = [list(argv) for argv in restores]
        self.posts = [list(argv) for argv in posts]
        self.hotplug = hotplug

    def ladder_end(self):
        largest = 0
        for ticks, _ in self.actions:
            if ticks > largest:
                largest = ticks
        return largest


class Unreadable:
    """A trace entry: the read at `tick` failed."""

    def __init__(self, tick):
        self.tick = tick


class Snapshot:
    """A trace entry: counters at `tick`; counters maps device -> (rx_bytes, rx_packets);
    a device not in it is absent."""

    def __init__(self, tick, counters):
        self.tick = tick
        self.counters = dict(counters)


class Fired:
    """One event the model decided on: kind, tick, device (list of names for post), step,
    silent ticks (0 for post)."""

    def __init__(self, kind, tick, device, step, silent):
        self.kind = kind
        self.tick = tick
        self.device = device
        self.step = step
        self.silent = silent


class DeviceModel:
    def __init__(self, counters):
        self.last = counters          # (bytes, packets) when last present, or None
        self.present = counters is not None
        self.age = 0
        self.down = False
        self.actions_fired = set()    # steps fired in this silent spell


def judged_entries(entries, devices):
    """The snapshots of a trace that are judged: (entry, ticks elapsed since the previous
    reading, {device: DeviceModel}).  The first snapshot is the baseline the models start
    from; an unreadable tick judges nobody but still moves the previous reading on."""
    devs = None
    previous = None
    for entry in entries:
        if isinstance(entry, Unreadable):
            if devs is not None:
                previous = entry.tick
            continue
        if devs is None:
            devs = {name: DeviceModel(entry.counters.get(name)) for name in devices}
            previous = entry.tick
            continue
        yield entry, entry.tick - previous, devs
        previous = entry.tick

class Model:
    def __init__(self, config):
        self.config = config

    def held(self, device, tick):
        """Hook for held devices (issue 5): True = no action or retry fires for it now."""
        return False

    def traffic(self, dev, now):
        """Did the device receive since its last reading?  Updates its remembered counters."""
        was_present = dev.present
        dev.present = now is not None
        if now is None:
            return False
        old = dev.last
        dev.last = now
        if old is None or (not was_present and REAPPEAR_IS_RESET):
            return now[1] > 0
        if now[0] < old[0] or now[1] < old[1]:
            return now[1] > 0
        return now[0] > old[0] or now[1] > old[1]

    def events(self, entries):
        """Run the trace entries (Snapshot / Unreadable, ticks increasing); list of Fired."""
        config = self.config
        out = []
        end = config.ladder_end()
        for entry, elapsed, devs in judged_entries(entries, config.devices):
            restored = []
            for name in config.devices:
                dev = devs[name]
                if self.traffic(dev, entry.counters.get(name)):
                    if dev.down:
                        out.append(Fired("restore", entry.tick, name, 0, dev.age))
                        restored.append(name)
                    dev.age = 0
                    dev.down = False
                    dev.actions_fired = set()
                    continue
                passed = []                     # every age this tick's silence went through
                for _ in range(elapsed):
                    dev.age += 1
                    passed.append(dev.age)
                if self.held(name, entry.tick):
                    continue
                step = 0
                for ticks, _ in config.actions:
                    step += 1
                    if step not in dev.actions_fired and dev.age >= ticks:
                        dev.actions_fired.add(step)
                        dev.down = True
                        out.append(Fired("action", entry.tick, name, step, dev.age))
                step = 0
                for period, _ in config.retries:
                    step += 1
                    due = False
                    for age in passed:
                        if age > end and (age - end) % period == 0:
                            due = True
                    if due:
                        dev.down = True
                        out.append(Fired("retry", entry.tick, name, step, dev.age))
            if restored:
                out.append(Fired("post_restore_any", entry.tick, restored, 0, 0))
        return out

    def lines(self, entries):
        """The replay output: `t=<seconds> <event> <argv...>` per script that would run."""
        config = self.config
        out = []
        for fired in self.events(entries):
            when = fmt(fired.tick * config.interval)
            silent = fmt(fired.silent * config.interval)
            if fired.kind == "action":
                commands = [config.actions[fired.step - 1][1] + [fired.device, silent]]
            elif fired.kind == "retry":
                commands = [config.retries[fired.step - 1][1] + [fired.device, silent]]
            elif fired.kind == "restore":
                commands = [argv + [fired.device, silent] for argv in config.restores]
            else:
                commands = [argv + list(fired.device) for argv in config.posts]
            if config.hotplug:
                commands.append(HOTPLUG_ARGV)
            for argv in commands:
                out.append("t=%s %s %s" % (when, fired.kind, " ".join(argv)))
        return out


# ---------------------------------------------------------------------------------------------
# Invariants over a replay's output, independent of how the ladder is computed.

def parse_line(line):
    """'t=15 action /x/a1 tun0 15' -> (seconds Fraction, event, argv list)."""
    head, event, rest = line.split(" ", 2)
    assert head.startswith("t="), line
    return Fraction(head[2:]), event, rest.split(" ")


def check_invariants(config, entries, lines, script_kind, held=None):
    """Check issue 8's invariants on replay output `lines` of a trace made of `entries`.

    `script_kind` maps a script's first word to (event, step); scripts must be one word and
    device names must have no spaces.  The traffic ticks come from the model's traffic rule
    (the one thing taken from the model); everything else is counted from the output:
      - each action at most once per silent spell (per device);
      - a restore only for a device that was down (an action or retry in that spell);
      - each retry entry fires exactly when the age passes L + nP (once per judged tick);
      - post_restore_any exactly once per tick with restores, naming the restored devices in
        config order, and never in a tick without one;
      - nothing fires for a held device (held(device, tick) -> bool; none yet).
    Returns the number of lines checked.
    """
    interval = config.interval
    held = held or (lambda device, tick: False)
    model = Model(config)
    # Traffic per judged tick from the model's rule, and the judged ticks themselves.
    traffic = {}          # tick -> set of devices with traffic
    judged = []           # (tick, elapsed)
    for entry, elapsed, devs in judged_entries(entries, config.devices):
        traffic[entry.tick] = set(name for name in config.devices
                                  if model.traffic(devs[name], entry.counters.get(name)))
        judged.append((entry.tick, elapsed))

    by_tick = {}
    for line in lines:
        seconds, event, argv = parse_line(line)
        tick = seconds / interval
        assert tick.denominator == 1, line
        by_tick.setdefault(int(tick), []).append((event, argv, line))
    judged_ticks = set(t for t, _ in judged)
    for tick in by_tick:
        assert tick in judged_ticks, "output at a tick that judged nobody: %r" % by_tick[tick]

    end = config.ladder_end()
    ages = {name: 0 for name in config.devices}
    fired_in_spell = {name: set() for name in config.devices}
    down = {name: False for name in config.devices}
    for tick, elapsed in judged:
        here = by_tick.get(tick, [])
        restored = []
        retries_seen = {}
        for event, argv, line in here:
            if event == "post_restore_any":
                continue
            kind, step = script_kind[argv[0]]
            assert kind == event, line
            device = argv[-2]
            silent = Fraction(argv[-1])
            if event == "restore":
                assert device in traffic[tick], "restore without traffic: " + line
                assert down[device], "restore of a device that was never down: " + line
                assert silent == ages[device] * interval, line
                if device not in restored:
                    restored.append(device)
                continue
            assert device not in traffic[tick], "ladder event on a tick with traffic: " + line
            assert not held(device, tick), "event for a held device: " + line
            assert silent == (ages[device] + elapsed) * interval, line
            if event == "action":
                assert step not in fired_in_spell[device], "action twice in a spell: " + line
                fired_in_spell[device].add(step)
            else:
                key = (device, step)
                assert key not in retries_seen, "retry twice in one tick: " + line
                retries_seen[key] = True
        # Retries exactly at their periods: entry fires iff an age L+nP was passed this tick.
        for name in config.devices:
            if name in traffic[tick] or held(name, tick):
                continue
            before = ages[name]
            after = before + elapsed
            for step, (period, _) in enumerate(config.retries, 1):
                due = any(age > end and (age - end) % period == 0
                          for age in range(before + 1, after + 1))
                assert due == ((name, step) in retries_seen), \
                    "retry %d of %s at tick %d: due=%s (ages %d..%d)" % (step, name, tick, due,
                                                                       before + 1, after)
        # Restores: exactly the down devices whose traffic came back (when there are scripts).
        due = [name for name in config.devices if name in traffic[tick] and down[name]]
        if config.restores:
            assert restored == due, "tick %d: restores %r, due %r" % (tick, restored, due)
        # post_restore_any: once per tick with restores, names in config order.
        posts = [argv for event, argv, line in here if event == "post_restore_any"]
        if due and config.posts:
            assert len(posts) == len(config.posts), "tick %d: posts %r" % (tick, posts)
            for argv in posts:
                assert argv[len(argv) - len(due):] == due, "tick %d: %r, due %r" % (tick, argv,
                                                                                     due)
        else:
            assert not posts, "tick %d: post_restore_any without a restore: %r" % (tick, posts)
        # Advance the checker's own state.
        for name in config.devices:
            if name in traffic[tick]:
                ages[name] = 0
                fired_in_spell[name] = set()
                down[name] = False
            else:
                ages[name] += elapsed
        for event, argv, line in here:
            if event in ("action", "retry"):
                down[argv[-2]] = True
    return len(lines)
