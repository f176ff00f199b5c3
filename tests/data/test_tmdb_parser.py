"""The Movies Dataset parser: MovieLens-format ratings joined through links.csv to TMDB metadata."""

from __future__ import annotations

import csv
import io
from pathlib import Path

METADATA_HEADER = (
    "adult,belongs_to_collection,budget,genres,homepage,id,imdb_id,original_language,original_title,overview,"
    "popularity,poster_path,production_companies,production_countries,release_date,revenue,runtime,"
    "spoken_languages,status,tagline,title,video,vote_average,vote_count"
).split(",")


def metadata_row(tmdb_id: str, title: str, release: str, genres: str, overview: str) -> list[str]:
    row = dict.fromkeys(METADATA_HEADER, "")
    row.update(
        adult="False",
        belongs_to_collection="{'id': 10194, 'name': 'Toy Story Collection', 'poster_path': '/x.jpg'}",
        id=tmdb_id,
        genres=genres,
        title=title,
        original_title=title,
        release_date=release,
        overview=overview,
        production_companies="[{'name': 'Pixar Animation Studios', 'id': 3}]",
        vote_average="7.7",
    )
    return list(row.values())


def write_movies_dataset(root: Path, ratings_name: str = "ratings_small.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ratings_name).write_text(
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n2,31,4.0,835355493\n2,10,0.5,835355681\n"
    )
    (root / "links_small.csv").write_text(
        "movieId,imdbId,tmdbId\n31,0112792,9909\n1029,0033563,11360\n10,0113189,\n2,0113497,8844\n"
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(METADATA_HEADER)
    writer.writerow(
        metadata_row(
            "9909",
            "Dangerous Minds",
            "1995-08-11",
            "[{'id': 18, 'name': 'Drama'}, {'id': 80, 'name': 'Crime'}]",
            'Former Marine Louanne Johnson lands a gig teaching, "with\nnewlines" and, commas.',
        )
    )
    writer.writerow(metadata_row("1997-08-20", "- Written by Ørnås", "1", "[]", ""))  # a broken Kaggle record
    writer.writerow(["- Written by Ørnås", "/ff9qCepilowshEtG2GYWwzt2bs4.jpg", "[]"])  # the other half of one
    writer.writerow(metadata_row("11360", "Dumbo", "", "[]", ""))
    writer.writerow(metadata_row("11360", "Dumbo (duplicate record)", "1941-10-23", "[]", "ignored"))
    writer.writerow(metadata_row("8844", "Jumanji", "1995-12-15", "[{'id': 12, 'name': 'Adventure'}]", "not rated here"))
    (root / "movies_metadata.csv").write_text(out.getvalue())
    return root


def test_small_ratings_with_tmdb_metadata(tmp_path, prepare):
    got = prepare("tmdb-small", write_movies_dataset(tmp_path / "movies"))
    assert (got.summary["users"], got.summary["items"], got.summary["ratings"]) == (2, 3, 4)
    assert got.items == [31, 1029, 10]
    assert got.column("rating") == [2.5, 3.0, 4.0, 0.5]
    assert got.column("ts") == [1260759144, 1260759179, 835355493, 835355681]
    items = got.table("items.parquet").to_pydict()
    assert items["raw"] == [31, 1029]  # movie 10 has no tmdbId, movie 2 is never rated
    assert items["title"] == ["Dangerous Minds", "Dumbo"]
    assert items["year"] == [1995, None]
    assert items["genres"] == [["Drama", "Crime"], []]
    assert items["overview"] == ['Former Marine Louanne Johnson lands a gig teaching, "with\nnewlines" and, commas.', None]
    assert got.summary["metadata_rows_skipped"] == 2
    assert got.summary["items_without_metadata"] == 1


def test_full_dataset_name_reads_ratings_csv(tmp_path, prepare, fails):
    root = write_movies_dataset(tmp_path / "movies")
    assert "prepare it as dataset 'tmdb-small'" in fails("tmdb", root)
    (root / "ratings.csv").write_text((root / "ratings_small.csv").read_text() + "3,2,5.0,835355700\n")
    got = prepare("tmdb", root, splits=["random"])
    assert got.summary["ratings"] == 5 and got.items == [31, 1029, 10, 2]


def test_bad_links_line(tmp_path, fails):
    root = write_movies_dataset(tmp_path / "movies")
    (root / "links_small.csv").write_text("movieId,imdbId,tmdbId\n31,0112792,9909\n1029,0033563,11360.5\n")
    assert fails("tmdb-small", root).startswith(f"{root}/links_small.csv, line 3: expected integer movieId and tmdbId")


def test_metadata_without_its_columns(tmp_path, fails):
    root = write_movies_dataset(tmp_path / "movies")
    (root / "movies_metadata.csv").write_text("adult,id,title\nFalse,862,Toy Story\n")
    message = fails("tmdb-small", root)
    assert message.startswith(f"{root}/movies_metadata.csv, line 1: expected a header with the columns id, title, release_date")
    assert message.endswith("; release_date, genres, overview missing")
