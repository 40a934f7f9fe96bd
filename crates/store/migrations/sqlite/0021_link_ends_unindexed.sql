-- What a queued action costs to write, continued (issue 11; see 0016, 0019 and 0020).
-- links_calendar_ends (calendar_id, ends_at) was keyed at random (a meeting's end time): each
-- link written cost a page written at a random place, about 380 bytes of WAL per conference
-- adopted. Its only reader is a windowed full sync's one query for the links it did not list
-- (`link_event_ids_ending_after`), once per full sync: that walks the calendar's links in
-- links_event instead, in the event order it answers in, and reads each one's end.
DROP INDEX links_calendar_ends;
