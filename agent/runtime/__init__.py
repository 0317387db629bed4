"""What keeps the daemon running and observable, beside its work: housekeeping as time passes
(``housekeeping.py``), the one status view (``status.py``), Prometheus metrics (``metrics.py``),
systemd's notifications (``sdnotify.py``), the install's checks (``doctor.py``) and the crash and fault
points tests arm (``faults.py``).
"""
