"""Double-entry ledger: balanced postings, two-phase reservations, a hash chain, verification.

Pure code: it builds and checks transactions; `aisc.store` persists them.
"""
