"""The one owner of the pipeline tables (`messages`, `recipients`) that several services write.

Services keep their transactions; every statement that changes a row of these tables lives here,
so a state's meaning (and the partial indexes it must match) is read in one place.
"""
