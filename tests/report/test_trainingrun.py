"""trainingrun.py: the run folders behind a checkpoint, metrics.csv, the plan in train.log."""
from segnet.report import trainingrun

LOG = """run folder: runs/x
plan:
  crop size   96 px   auto
  steps       400     flag
class weights: ...
  epoch 1 step 20/75 loss 0.6
resumed
plan:
  crop size   128 px  auto
step 40/400
"""


def test_the_last_plan_table_of_train_log(tmp_path):
    (tmp_path / "train.log").write_text(LOG)
    assert trainingrun.plan_lines(tmp_path) == ["plan:", "  crop size   128 px  auto"]
    assert trainingrun.plan_lines(tmp_path / "missing") == []


def test_metrics_rows_need_the_curves_columns(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,train_loss,val_loss,miou,mean_dice\n"
                                          "0.5,1.0,0.9,0.4,0.5\n")
    assert trainingrun.metrics_rows(tmp_path)[0]["miou"] == "0.4"
    (tmp_path / "metrics.csv").write_text("epoch,loss\n1,2\n")
    assert trainingrun.metrics_rows(tmp_path) == [] == trainingrun.metrics_rows(tmp_path / "no")


def test_run_folders_of_a_checkpoint_or_of_each_fold(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "last.pt").write_bytes(b"")
    assert trainingrun.run_folders(tmp_path / "a" / "last.pt") == [tmp_path / "a"]
    members = [str(tmp_path / "a" / "last.pt"), str(tmp_path / "b" / "last.pt")]
    assert trainingrun.run_folders(tmp_path, members) == [tmp_path / "a", tmp_path / "b"]
