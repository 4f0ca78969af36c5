"""``latalign reproduce``: the paper's experiments end to end, with a report."""
