"""OAuth: flows (`flows`), failure classification (`errors`), consent steps (`consent`), token checks (`verify`)."""
