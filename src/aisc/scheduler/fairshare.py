"""Fair share: Slurm's classic factor F = 2^(-U/S) from decayed usage U and entitled share S.

Why classic and not Fair Tree: entitlements here come from awards, which are flat per
project (optionally grouped by organisation, computed level by level below), and the classic
factor is a closed-form vector operation over every project at once, which keeps a scheduling
cycle over a deep queue cheap. U and S are both normalised to sum to 1 across projects.

Usage decays with a half-life. It is stored scaled to a reference time, so adding usage and
reading it are O(1) per project and the decay of everyone's usage is a single multiplication.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
MAX_EXPONENT = 500.0  # renormalise the scaled usage long before floats overflow


class FairShare:
    def __init__(self, half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError("the usage half-life must be positive")
        self.half_life_s = half_life_s
        self._code: dict[int, int] = {}
        self._project: list[int] = []
        self._shares = np.zeros(0)
        self._org = np.zeros(0, dtype=np.int64)
        self._scaled_usage = np.zeros(0)
        self._reference = 0.0
        self._normalised: FloatArray | None = None  # cached until the shares change
        self._entitled: npt.NDArray[np.bool_] | None = None  # shares > 0, cached with them
        self._divisor: FloatArray | None = None  # the shares, 1 where there is none
        self.group_by_org = False

    # -- projects and their entitlements -------------------------------------------------

    def code(self, project: int) -> int:
        """A dense index for a project, added with no share (and no guarantee) if unknown."""
        found = self._code.get(project)
        if found is not None:
            return found
        code = len(self._project)
        self._code[project] = code
        self._project.append(project)
        self._shares = np.append(self._shares, 0.0)
        self._org = np.append(self._org, -1)
        self._scaled_usage = np.append(self._scaled_usage, 0.0)
        return code

    @property
    def size(self) -> int:
        return len(self._project)

    def set_shares(
        self, shares: Mapping[int, float], org_of: Mapping[int, int] | None = None
    ) -> None:
        """Entitled shares per project (any positive scale); projects not named get none."""
        for project in shares:
            self.code(project)
        raw = np.zeros(self.size)
        for project, value in shares.items():
            if value < 0:
                raise ValueError(f"project {project} has a negative share")
            raw[self._code[project]] = value
        self._normalised = None
        self.group_by_org = org_of is not None
        if org_of is not None:
            for project, org in org_of.items():
                self._org[self.code(project)] = org
        self._shares = raw

    def normalised_shares(self) -> FloatArray:
        """S per project: its award's part of all awards, summing to 1."""
        if self._normalised is None or len(self._normalised) != self.size:
            total = float(self._shares.sum())
            self._normalised = self._shares / total if total > 0 else np.zeros(self.size)
            self._entitled = self._divisor = None  # derived from the shares: see `factors`
        return self._normalised

    # -- usage -----------------------------------------------------------------------------

    def add_usage(self, project: int, gpu_seconds: float, at: float) -> None:
        if gpu_seconds <= 0:
            return
        code = self.code(project)
        exponent = (at - self._reference) / self.half_life_s
        if exponent > MAX_EXPONENT:
            self._rebase(at)
            exponent = 0.0
        self._scaled_usage[code] += gpu_seconds * math.pow(2.0, exponent)

    def _rebase(self, at: float) -> None:
        self._scaled_usage *= math.pow(2.0, -(at - self._reference) / self.half_life_s)
        self._reference = at

    def usage(self, now: float, running: FloatArray | None = None) -> FloatArray:
        """Decayed usage per project at `now`, plus GPU-seconds of jobs still running."""
        decay = math.pow(2.0, -(now - self._reference) / self.half_life_s)
        decayed: FloatArray = self._scaled_usage * decay
        if running is not None:
            decayed = decayed + running
        return decayed

    def factors(self, now: float, running: FloatArray | None = None) -> FloatArray:
        """F = 2^(-U/S) per project: 1 for an unused share, 0.5 at exactly its share, ->0 above.

        Grouped by organisation, U is Slurm's classic effective usage: a project's own usage
        pulled towards its organisation's, by the project's part of the organisation's awards,
        so a busy organisation's projects all rank lower.
        """
        usage = self.usage(now, running)
        total = usage.sum()
        normalised_usage = usage / total if total > 0 else np.zeros(self.size)
        if self.group_by_org:
            normalised_usage = self._effective_usage(normalised_usage)
        shares = self.normalised_shares()
        entitled, divisor = self._entitled, self._divisor
        if entitled is None or divisor is None:
            entitled = shares > 0
            divisor = np.where(entitled, shares, 1.0)  # no share: no division by zero, no factor
            self._entitled, self._divisor = entitled, divisor
        factor: FloatArray = np.exp2(-(normalised_usage / divisor))
        factor[~entitled] = 0.0  # a project with no share ranks last
        return factor

    def _effective_usage(self, usage: FloatArray) -> FloatArray:
        orgs, members = np.unique(self._org, return_inverse=True)
        org_usage = np.bincount(members, weights=usage, minlength=len(orgs))
        org_shares = np.bincount(members, weights=self._shares, minlength=len(orgs))
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.where(org_shares[members] > 0, self._shares / org_shares[members], 0.0)
        effective: FloatArray = usage + (org_usage[members] - usage) * part
        return effective
